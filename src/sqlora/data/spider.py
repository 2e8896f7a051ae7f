"""Fetch the Spider release (URL, zip or folder) into place, and read its files."""

from __future__ import annotations

import http.client
import json
import lzma
import os
import shutil
import stat
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..core.errors import SqloraError
from ..core.files import file_sha256
from ..core.progress import progress

REQUIRED = ("tables.json", "dev.json", "database/")
CHUNK = 1 << 20
OFFLINE_HINT = ("Offline? Get spider_data.zip another way, then run: "
                "dvc exp run -S data.source=path/to/spider_data.zip "
                "(or set data.source in params.yaml)")
_JUNK = ("__MACOSX", ".DS_Store")


# --- getting the archive ----------------------------------------------------

def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def local_source(source: str) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        raise SqloraError(f"data.source: {source} does not exist "
                          "(give a Spider zip or URL, or a folder: Spider's, BIRD's or your own)")
    return path


def download(url: str, dest: Path, *, timeout: float = 60.0) -> Path:
    """Stream url to dest; fail if the transfer is cut short or the answer is not a zip."""
    request = urllib.request.Request(url, headers={"User-Agent": "sqlora (python urllib)"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        raise _unreachable(url, f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise _unreachable(url, _reason(error.reason, timeout)) from None
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise _unreachable(url, _reason(error, timeout)) from None

    with response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        received = 0
        try:
            with dest.open("wb") as out, progress(total=expected, unit="B", unit_scale=True,
                                                  unit_divisor=1024, desc="download") as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as error:
            raise SqloraError(f"download from {url} broke off after {received:,} bytes "
                              f"({_reason(error, timeout)}). {OFFLINE_HINT}") from None
    if expected is not None and received != expected:
        raise SqloraError(f"download from {url} was cut short: got {received:,} of "
                          f"{expected:,} bytes. Try again. {OFFLINE_HINT}")
    if not zipfile.is_zipfile(dest):
        if _looks_like_html(dest):
            raise SqloraError(f"{url} returned an HTML page, not a zip: the link gave a web page "
                              "(Google Drive does this for quota or confirmation pages). Download the "
                              "zip in a browser and set data.source to its path")
        raise SqloraError(f"{url} returned a file that {_not_zip_reason(dest)}")
    return dest


def _unreachable(url: str, reason: str) -> SqloraError:
    return SqloraError(f"cannot download Spider from {url} ({reason}). {OFFLINE_HINT}")


def _reason(error: object, timeout: float) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _looks_like_html(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(512).removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def check_sha256(path: Path, expected: str) -> str:
    """Return the file's sha256; raise if `expected` is set and differs."""
    got = file_sha256(path)
    if expected and got != expected:
        raise SqloraError(f"sha256 of {path.name} does not match data.sha256: "
                          f"expected {expected}, got {got}")
    return got


# --- unpacking --------------------------------------------------------------

def require_zip(path: Path) -> None:
    """Raise, saying what the file is instead, unless path is a zip (by its end record)."""
    if zipfile.is_zipfile(path):
        return
    try:
        reason = _not_zip_reason(path)
    except OSError as error:
        raise SqloraError(f"data.source: cannot read {path}: {error.strerror or error}") from None
    raise SqloraError(f"data.source: {path} {reason}")


_LOCAL_HEADER = b"PK\x03\x04"
_END_RECORD = b"PK\x05\x06"
_NOT_ZIP_HINT = "give a Spider zip, a Spider folder or an http(s) URL"


def _not_zip_reason(path: Path) -> str:
    """What a file that zipfile rejects is instead: a web page, cut short, damaged, empty, other."""
    if _looks_like_html(path):
        return ("is an HTML page, not a zip: the link gave a web page (a sign-in, quota or "
                "confirmation page) instead of the file. Download the zip in a browser and set "
                "data.source to its path")
    size = path.stat().st_size
    if size == 0:
        return f"is empty, not a zip ({_NOT_ZIP_HINT})"
    with path.open("rb") as f:
        head = f.read(4)
        f.seek(max(0, size - (1 << 16) - 22))  # the end record, after at most a 64 KiB comment
        tail = f.read()
    if head != _LOCAL_HEADER:
        return f"is not a zip file ({_NOT_ZIP_HINT})"
    if _END_RECORD in tail:
        return ("is corrupt: it starts like a zip but the table of contents at its end is "
                "damaged. Download it again")
    return (f"is cut short: it starts like a zip but ends after {size:,} bytes, before the "
            "zip's table of contents (an interrupted download or copy). Download it again")


# What reading a damaged zip can raise: bad headers or CRC (BadZipFile), bad deflate data
# (zlib.error), a stream that ends early (EOFError), a mangled method or flags field
# (NotImplementedError, RuntimeError "encrypted"), a mangled name (UnicodeDecodeError), bad
# bzip2/lzma data (OSError, LZMAError).
_DAMAGED = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError,
            RuntimeError, UnicodeDecodeError, lzma.LZMAError, OSError)


class _WriteError(Exception):
    """An OSError while writing the extracted files (disk full, permissions), not while reading."""


def extract_spider_zip(archive: Path, dest: Path) -> None:
    """Extract archive into dest, dropping its single top folder (spider_data/, spider/).

    Every entry is checked before anything is written: none may land outside dest. A damaged
    archive (bad CRC, bad compressed data) raises SqloraError; dest may then hold part of it, so
    extract into a staging folder (fetch-db does).
    """
    require_zip(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = [(info, _safe_parts(info)) for info in zf.infolist()]
            entries = [(info, parts) for info, parts in entries if parts and parts[0] not in _JUNK]
            strip = _single_top_folder([parts for _, parts in entries])
            _write(dest.mkdir, parents=True, exist_ok=True)
            total = sum(info.file_size for info, _ in entries)
            with progress(total=total, unit="B", unit_scale=True, desc="extract") as bar:
                for info, parts in entries:
                    parts = parts[strip:]
                    if not parts or parts[-1] in _JUNK:
                        continue
                    target = dest.joinpath(*parts)
                    if info.is_dir():
                        _write(target.mkdir, parents=True, exist_ok=True)
                        continue
                    _write(target.parent.mkdir, parents=True, exist_ok=True)
                    _extract_entry(zf, info, target)
                    bar.update(info.file_size)
    except _WriteError as error:
        raise SqloraError(f"cannot extract {archive.name} into {dest.parent}: {error}") from None
    except _DAMAGED as error:
        raise SqloraError(f"data.source: {archive} is corrupt: damaged data inside the zip "
                          f"({_printable(error)}). Download it again") from None


def _extract_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Copy one entry to target; reading errors propagate as they are, writing ones as _WriteError."""
    with zf.open(info) as src:
        out = _write(target.open, "wb")
        with out:
            while chunk := src.read(CHUNK):  # CRC checked as the last chunk is read
                _write(out.write, chunk)


def _write(action, *args, **kwargs):
    try:
        return action(*args, **kwargs)
    except OSError as error:
        raise _WriteError(error.strerror or str(error)) from None


def _printable(error: BaseException, limit: int = 160) -> str:
    """The error's text on one line without control bytes (a damaged name may hold any byte)."""
    text = str(error) or type(error).__name__
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _safe_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The entry's path parts; raise if it could land outside the destination."""
    name = info.filename
    if PureWindowsPath(name).anchor or PurePosixPath(name).is_absolute() or ":" in name:
        raise SqloraError(f"unsafe zip entry {name!r}: absolute path or drive letter")
    parts = tuple(p for p in PureWindowsPath(name).parts if p not in ("", "."))
    if ".." in parts:
        raise SqloraError(f"unsafe zip entry {name!r}: it climbs out with '..'")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise SqloraError(f"unsafe zip entry {name!r}: symbolic links are not allowed")
    return parts


def _single_top_folder(all_parts: list[tuple[str, ...]]) -> int:
    """1 if every entry sits inside one top folder (so it is stripped), else 0."""
    tops = {parts[0] for parts in all_parts}
    return 1 if len(tops) == 1 and any(len(parts) > 1 for parts in all_parts) else 0


def copy_spider_folder(folder: Path, dest: Path) -> None:
    """Copy a Spider folder (or a folder holding exactly one, e.g. spider_data/) to dest."""
    root = find_spider_root(folder)
    try:
        # Contents only, not permission bits: a copy of a read-only folder must stay removable.
        for current, subfolders, files in os.walk(root, followlinks=True):
            subfolders[:] = [name for name in subfolders if name not in _JUNK]
            target = dest / Path(current).relative_to(root)
            target.mkdir(parents=True, exist_ok=True)
            for name in files:
                if name not in _JUNK:
                    shutil.copyfile(Path(current) / name, target / name)
    except OSError as error:
        raise SqloraError(f"cannot copy {root} into {dest.parent}: {error}") from None


def find_spider_root(folder: Path) -> Path:
    if (folder / "tables.json").is_file():
        return folder
    subfolders = [p for p in folder.iterdir() if p.is_dir() and p.name not in _JUNK
                  and not p.name.startswith(".")]
    if len(subfolders) == 1 and (subfolders[0] / "tables.json").is_file():
        return subfolders[0]
    return folder


def validate_spider(folder: Path, source: str) -> None:
    def present(name: str) -> bool:
        path = folder / name
        return path.is_dir() if name.endswith("/") else path.is_file()

    missing = [name for name in REQUIRED if not present(name)]
    if missing:
        raise SqloraError(f"data.source: {source} is not a Spider release: no "
                          f"{', '.join(missing)} at its top (or inside its single top folder); nor a "
                          "folder of your own (train.jsonl or train.csv, database/), nor BIRD's layout "
                          "(train/train.json, dev/dev.json)")


# --- reading ----------------------------------------------------------------

def read_json(path: Path):
    try:
        with Path(path).open(encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise SqloraError(f"{path} not found (run the fetch-db stage first)") from None
    except json.JSONDecodeError as error:
        raise SqloraError(f"{path} is not valid JSON ({error})") from None


def load_examples(path: Path) -> list[dict]:
    """Questions of a Spider split (dev.json, train_spider.json): each has db_id, question, query,
    and `origin`, where it came from (kept from the source's file where fetch-db wrote one)."""
    path = Path(path)
    examples = read_json(path)
    if not isinstance(examples, list):
        raise SqloraError(f"{path}: expected a list of questions")
    for i, example in enumerate(examples):
        if not isinstance(example, dict) or not all(
                isinstance(example.get(key), str) for key in ("db_id", "question", "query")):
            raise SqloraError(f"{path}: entry {i} lacks a db_id, question or query")
        example.setdefault("origin", f"{path.name} entry {i}")
    return examples


def database_file(spider_dir: Path, db_id: str) -> Path:
    return Path(spider_dir) / "database" / db_id / f"{db_id}.sqlite"


def summary(spider_dir: Path) -> dict[str, int]:
    spider_dir = Path(spider_dir)
    databases = [p for p in (spider_dir / "database").iterdir()
                 if database_file(spider_dir, p.name).is_file()]
    # Spider's release names its training questions train_spider.json; the layout fetch-db
    # writes for other sources, train.json (sqlora.data.layouts), where dev.json may be absent
    train = next((path for path in (spider_dir / "train_spider.json", spider_dir / "train.json")
                  if path.is_file()), None)
    dev = spider_dir / "dev.json"
    return {
        "databases": len(databases),
        "dev_questions": len(read_json(dev)) if dev.is_file() else 0,
        "train_questions": len(read_json(train)) if train else 0,
    }
