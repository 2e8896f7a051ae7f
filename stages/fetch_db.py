"""fetch-db: get the data (questions, tables.json, SQLite databases) into data/spider.

data.source is an http(s) URL of a Spider zip, a local zip, or a local folder: a Spider release,
a folder of your own questions and databases, or BIRD's layout (sqlora.data.layouts). Spider is
copied as it is; your own data and BIRD's are written in Spider's layout, with tables.json read
off the SQLite files where the source has none, and layout.json saying what the source was. The
new copy is built beside the output folder and swapped in only when complete, so a failed fetch
leaves the previous data/spider as it was; the source itself is only read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlora.core.errors import run_stage
from sqlora.core.files import replace_dir, staging_area
from sqlora.core.params import Params
from sqlora.data.layouts import SPIDER, TITLES, find_source, write_layout_file, write_spider_layout
from sqlora.data.spider import (
    check_sha256,
    copy_spider_folder,
    download,
    extract_spider_zip,
    is_url,
    local_source,
    require_zip,
    summary,
    validate_spider,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="folder to fill with the data, in Spider's layout")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for the server before giving up (default: 60)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    data = Params.read(args.params).data
    source, expected_sha256 = data.source, data.sha256

    with staging_area(args.out) as staging:
        if is_url(source):
            print(f"downloading from {source}")
            archive = download(source, staging / "spider.zip", timeout=args.timeout)
        else:
            archive = local_source(source)

        new_copy = staging / "spider"
        if archive.is_dir():
            if expected_sha256:
                print("note: data.sha256 is not checked for a folder source")
            found = find_source(archive)
            if found.layout == SPIDER:
                copy_spider_folder(archive, new_copy)
        else:
            require_zip(archive)
            report_sha256(check_sha256(archive, expected_sha256), expected_sha256)
            extract_spider_zip(archive, new_copy)
            found = find_source(new_copy)
            if found.layout != SPIDER:  # written out afresh below, from what the zip held
                new_copy = staging / "prepared"
        if found.layout == SPIDER:
            validate_spider(new_copy, source)
            record = {"layout": SPIDER}
        else:
            print(f"{TITLES[found.layout]} in {source}")
            record = write_spider_layout(found, new_copy, staging)
        write_layout_file(new_copy, record)
        replace_dir(new_copy, args.out)

    counts = summary(args.out)
    dev = f"{counts['dev_questions']} dev questions"
    if found.layout != SPIDER and not found.dev:
        dev = "no dev file (preprocess splits one off by database)"
    derived = f" (tables.json read off {record['tables_derived']} of them)" if record.get("tables_derived") else ""
    print(f"{TITLES[found.layout]} ready in {args.out}: {counts['databases']} databases{derived}, "
          f"{dev}, {counts['train_questions']} train questions")


def report_sha256(got: str, expected: str) -> None:
    if expected:
        print(f"sha256 {got} matches data.sha256")
    else:
        print(f"sha256 {got} (not checked: put it in params.yaml data.sha256 to pin this release)")


if __name__ == "__main__":
    run_stage(main)
