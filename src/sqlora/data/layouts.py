"""The data layouts data.source may hold, and the one layout fetch-db writes for all of them.

- **Spider**: tables.json, dev.json, train_spider.json, database/<db_id>/<db_id>.sqlite; copied
  as it is.
- **Your own folder**: train.jsonl (or .csv, .json), optionally dev.jsonl (or .csv, .json), the
  databases as database/<db_id>/<db_id>.sqlite or database/<db_id>.sqlite, optionally a
  tables.json (sqlora.data.questions reads the question files).
- **BIRD**: train/train.json with train/train_databases/ (or train_databases/ beside train/),
  dev/dev.json with dev/dev_databases/ (or dev_databases/ beside dev/); a split folder may carry
  a suffix (dev_20240627/), and a <split>_databases.zip stands in for its folder. BIRD's
  <split>_tables.json are used where present.

Your own data and BIRD's are written out in Spider's layout: train.json, dev.json (where the
source has a dev file; otherwise preprocess splits one off by database), tables.json (the
entries the source has, the others read off the SQLite files) and database/<db_id>/<db_id>.sqlite.
Every layout gets LAYOUT_FILE, which says what the source was; evaluation's `eval.metric: auto`
goes by it. The source is only read, never written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import SqloraError
from ..core.progress import progress
from .questions import SUFFIXES, read_questions
from .spider import extract_spider_zip, read_json
from .sqlite_schema import read_schema

LAYOUT_FILE = "layout.json"
SPIDER, OWN, BIRD = "spider", "own", "bird"
TITLES = {SPIDER: "Spider", OWN: "your own data", BIRD: "BIRD"}
SOURCE_NAMES = {SPIDER: "a Spider release", OWN: "a folder of your own", BIRD: "BIRD's layout"}
DATABASE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
_JUNK = ("__MACOSX", ".DS_Store")


@dataclass
class Source:
    """What a source folder holds, found by `find_source`."""

    layout: str
    root: Path
    train: Path | None = None
    dev: Path | None = None
    database_folders: list[Path] = field(default_factory=list)
    database_zips: list[Path] = field(default_factory=list)
    tables_files: list[Path] = field(default_factory=list)


def find_source(folder: Path) -> Source:
    """The layout of a folder, or of the single folder inside it (an unpacked zip's top folder);
    a folder that is neither BIRD's nor your own is taken for Spider's (validated on copy)."""
    candidates = [folder]
    inside = [p for p in folder.iterdir() if p.is_dir() and p.name not in _JUNK and not p.name.startswith(".")]
    if len(inside) == 1 and not [p for p in folder.iterdir() if p.is_file() and p.name not in _JUNK]:
        candidates.append(inside[0])
    for root in candidates:
        source = _bird_source(root) or _own_source(root)
        if source:
            return source
    return Source(SPIDER, folder)


def _own_source(root: Path) -> Source | None:
    train = _question_file(root, "train")
    if train is None:
        return None
    tables = [root / "tables.json"] if (root / "tables.json").is_file() else []
    return Source(OWN, root, train=train, dev=_question_file(root, "dev"),
                  database_folders=[root / "database"], tables_files=tables)


def _question_file(folder: Path, split: str) -> Path | None:
    found = [folder / f"{split}{suffix}" for suffix in SUFFIXES if (folder / f"{split}{suffix}").is_file()]
    if len(found) > 1:
        raise SqloraError(f"{folder}: both {found[0].name} and {found[1].name}: keep one")
    return found[0] if found else None


def _bird_source(root: Path) -> Source | None:
    splits = {split: _bird_split_folder(root, split) for split in ("train", "dev")}
    if not any(splits.values()):
        return None
    source = Source(BIRD, root)
    for split, folder in splits.items():
        if folder is None:
            continue
        setattr(source, split, folder / f"{split}.json")
        databases = [folder / f"{split}_databases", root / f"{split}_databases"]
        found = next((p for p in databases if p.is_dir()), None)
        archive = next((p.with_suffix(".zip") for p in databases if p.with_suffix(".zip").is_file()), None)
        if found:
            source.database_folders.append(found)
        elif archive:
            source.database_zips.append(archive)
        else:
            raise SqloraError(f"{folder}: {split}.json has no {split}_databases/ beside it "
                              f"(BIRD's layout: {folder.name}/{split}.json and {folder.name}/{split}_databases/)")
        tables = folder / f"{split}_tables.json"
        if tables.is_file():
            source.tables_files.append(tables)
    if source.train is None:
        raise SqloraError(f"{root}: BIRD's layout needs train/train.json (with train_databases/) to train on")
    return source


def _bird_split_folder(root: Path, split: str) -> Path | None:
    named = [root / split, *sorted(p for p in root.glob(f"{split}_*") if p.is_dir())]
    return next((p for p in named if (p / f"{split}.json").is_file()), None)


# --- writing Spider's layout ---------------------------------------------------

def write_spider_layout(source: Source, dest: Path, scratch: Path) -> dict:
    """Write a source of your own or BIRD's into dest in Spider's layout (scratch: room to
    unpack database zips); return what LAYOUT_FILE records."""
    train = read_questions(source.train)
    dev = read_questions(source.dev) if source.dev else None
    databases = _find_databases(source, scratch)
    wanted = {q["db_id"] for q in train + (dev or [])}
    if not databases:
        places = ", ".join(str(p) for p in source.database_folders + source.database_zips) or "database/"
        raise SqloraError(f"no SQLite databases in {places} (expected <db_id>/<db_id>.sqlite"
                          + (" or <db_id>.sqlite)" if source.layout == OWN else ")"))
    if not wanted & set(databases):
        raise SqloraError(f"none of the questions' db_ids ({_some(wanted)}) has a database in "
                          f"{', '.join(str(p) for p in source.database_folders) or 'the source'}")

    dest.mkdir(parents=True, exist_ok=True)
    given = _given_tables(source.tables_files)
    tables, derived = [], 0
    for db_id, path in progress(sorted(databases.items()), desc="databases", unit="db"):
        target = dest / "database" / db_id / f"{db_id}.sqlite"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(path, target)  # contents only: the copy stays removable
        except OSError as error:
            raise SqloraError(f"cannot copy {path} into {dest}: {error}") from None
        if db_id in given:
            tables.append(given.pop(db_id))
        else:
            tables.append(read_schema(target, db_id))
            derived += 1
    tables.extend(given.values())  # entries without a database file, as Spider's release has
    _write_json(dest / "tables.json", tables)
    _write_json(dest / "train.json", train)
    if dev is not None:
        _write_json(dest / "dev.json", dev)
    return {"layout": source.layout, "train_file": source.train.name,
            "dev_file": source.dev.name if source.dev else None,
            "databases": len(databases), "tables_derived": derived}


def _find_databases(source: Source, scratch: Path) -> dict[str, Path]:
    folders = list(source.database_folders)
    for number, archive in enumerate(source.database_zips):
        unpacked = scratch / f"databases-{number}"
        extract_spider_zip(archive, unpacked)
        folders.append(unpacked)
    found: dict[str, Path] = {}
    for folder in folders:
        for db_id, path in databases_in(folder).items():
            if db_id in found:
                raise SqloraError(f"two databases named {db_id}: {found[db_id]} and {path}")
            found[db_id] = path
    return found


def databases_in(folder: Path) -> dict[str, Path]:
    """{db_id: file} for <db_id>/<db_id>.sqlite and <db_id>.sqlite (or .sqlite3, .db) in folder."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for child in sorted(folder.iterdir()):
        if child.name in _JUNK or child.name.startswith("."):
            continue
        if child.is_dir():
            path = next((child / f"{child.name}{s}" for s in DATABASE_SUFFIXES
                         if (child / f"{child.name}{s}").is_file()), None)
            db_id = child.name
        elif child.suffix.lower() in DATABASE_SUFFIXES:
            path, db_id = child, child.stem
        else:
            continue
        if path is None:
            continue
        if db_id in found:
            raise SqloraError(f"two databases named {db_id}: {found[db_id]} and {path}")
        found[db_id] = path
    return found


def _given_tables(paths: list[Path]) -> dict[str, dict]:
    given: dict[str, dict] = {}
    for path in paths:
        entries = read_json(path)
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "db_id" in e for e in entries):
            raise SqloraError(f"{path}: expected a list of databases with a db_id each (Spider's tables.json)")
        given.update((entry["db_id"], entry) for entry in entries)
    return given


def _some(names: set[str], limit: int = 5) -> str:
    shown = sorted(names)[:limit]
    return ", ".join(shown) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8", newline="\n")


def write_layout_file(folder: Path, record: dict) -> None:
    _write_json(folder / LAYOUT_FILE, record)


# --- reading it back ------------------------------------------------------------

def read_layout(folder: str | Path) -> dict:
    """LAYOUT_FILE of a fetched folder; a folder without one holds Spider."""
    path = Path(folder) / LAYOUT_FILE
    if not path.is_file():
        return {"layout": SPIDER}
    record = read_json(path)
    if not isinstance(record, dict) or record.get("layout") not in TITLES:
        raise SqloraError(f"{path}: expected {{\"layout\": \"spider\" | \"own\" | \"bird\", ...}}")
    return record


def train_file(folder: str | Path) -> Path:
    """The training questions of a fetched folder: Spider's train_spider.json, else train.json."""
    name = "train_spider.json" if read_layout(folder)["layout"] == SPIDER else "train.json"
    return Path(folder) / name
