"""fetch-db: download (from a local HTTP server of the test's own), zip or folder, all-or-nothing."""

from __future__ import annotations

import hashlib
import socket
import stat
import threading
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from script_modules import one_error_line
from tiny_spider import zip_tiny_spider

from sqlora.core.errors import SqloraError
from sqlora.core.files import replace_dir
from sqlora.data.spider import extract_spider_zip

STAGE = "stages/fetch_db.py"


class Handler(BaseHTTPRequestHandler):
    """Serves server.routes: path -> (body, content type, Content-Length to announce)."""

    def do_GET(self):
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, content_type, announced = route
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        self.wfile.write(body)  # when announced > len(body) the connection just closes: cut short

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.routes = {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def serve(server, path: str, body: bytes, content_type="application/zip", announced=None) -> str:
    server.routes[path] = (body, content_type, len(body) if announced is None else announced)
    return server.url + path


def write_params(folder: Path, source, sha256: str = "") -> None:
    params = {"data": {"source": str(source), "sha256": sha256, "schema_format": "compact",
                       "value_hints": False, "evidence": True, "train_limit": 0, "dev_limit": 0,
                       "dev_fraction": 0.2, "split_seed": 42}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


@pytest.fixture
def fetch(tmp_path, run_script):
    """fetch(source, sha256="") runs the stage in a fresh project folder; returns (result, out)."""
    project = tmp_path / "project"
    project.mkdir()

    def run(source, sha256="", *extra):
        write_params(project, source, sha256)
        return run_script(STAGE, "--out", "data/spider", *extra, cwd=project), project / "data" / "spider"
    return run


def assert_complete(out: Path) -> None:
    for name in ("tables.json", "dev.json", "train_spider.json", "dev_gold.sql"):
        assert (out / name).is_file(), name
    for db_id in ("concert", "school", "shop"):
        assert (out / "database" / db_id / f"{db_id}.sqlite").is_file()


def no_leftovers(out: Path) -> bool:
    return not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def previous_copy(out: Path) -> Path:
    out.mkdir(parents=True)
    (out / "tables.json").write_text("[]", encoding="utf-8")
    return out / "tables.json"


def test_download_happy_path(server, tiny_spider_zip, fetch):
    body = tiny_spider_zip.read_bytes()
    result, out = fetch(serve(server, "/spider_data.zip", body))
    assert result.returncode == 0, result.stderr
    assert_complete(out)
    assert hashlib.sha256(body).hexdigest() in result.stdout
    assert "3 databases, 26 dev questions, 40 train questions" in result.stdout
    assert no_leftovers(out)


def test_download_with_pinned_sha256_replaces_previous_copy(server, tiny_spider_zip, fetch):
    body = tiny_spider_zip.read_bytes()
    url = serve(server, "/pinned.zip", body)
    result, out = fetch(url)
    (out / "stale.txt").write_text("from an older fetch", encoding="utf-8")
    result, out = fetch(url, hashlib.sha256(body).hexdigest())
    assert result.returncode == 0, result.stderr
    assert "matches data.sha256" in result.stdout
    assert_complete(out)
    assert not (out / "stale.txt").exists()
    assert no_leftovers(out)


def test_transfer_cut_short_leaves_previous_copy(server, tiny_spider_zip, fetch, tmp_path):
    body = tiny_spider_zip.read_bytes()
    url = serve(server, "/short.zip", body[: len(body) // 2], announced=len(body))
    marker = previous_copy(tmp_path / "project" / "data" / "spider")
    result, out = fetch(url)
    line = one_error_line(result)
    assert "cut short" in line and f"of {len(body):,} bytes" in line
    assert marker.read_text(encoding="utf-8") == "[]"
    assert sorted(p.name for p in out.iterdir()) == ["tables.json"]
    assert no_leftovers(out)


def test_transfer_cut_short_leaves_nothing(server, tiny_spider_zip, fetch):
    body = tiny_spider_zip.read_bytes()
    result, out = fetch(serve(server, "/short2.zip", body[:1000], announced=len(body)))
    assert "cut short" in one_error_line(result)
    assert not out.exists()
    assert no_leftovers(out)


def test_checksum_mismatch(server, tiny_spider_zip, fetch):
    body = tiny_spider_zip.read_bytes()
    result, out = fetch(serve(server, "/spider_data.zip", body), "0" * 64)
    line = one_error_line(result)
    assert f"expected {'0' * 64}, got {hashlib.sha256(body).hexdigest()}" in line
    assert not out.exists()


PAGE = b"<!DOCTYPE html><html><head><title>Google Drive</title></head><body>quota</body></html>"


def test_html_page_instead_of_zip(server, fetch):
    result, out = fetch(serve(server, "/page", PAGE, content_type="text/html"))
    line = one_error_line(result)
    assert "HTML page, not a zip: the link gave a web page" in line and "data.source" in line
    assert not out.exists()


def test_http_error_and_unreachable_give_offline_hint(server, fetch):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    for url in (f"http://127.0.0.1:{closed_port}/spider_data.zip", server.url + "/no-such-file.zip"):
        result, out = fetch(url)
        line = one_error_line(result)
        assert line.startswith(f"error: cannot download Spider from {url} (")
        assert "dvc exp run -S data.source=path/to/spider_data.zip" in line and "params.yaml" in line
        assert not out.exists()


def test_server_that_never_answers_times_out(fetch):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections queue up but are never answered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/spider_data.zip"
        result, _ = fetch(url, "", "--timeout", "0.5")
    assert "no answer within 0.5 s" in one_error_line(result)


@pytest.mark.parametrize("top", ["spider_data", "spider", ""])
def test_local_zip(tiny_spider, tmp_path, fetch, top):
    archive = zip_tiny_spider(tiny_spider, tmp_path / f"release-{top or 'flat'}.zip", top=top)
    result, out = fetch(archive)
    assert result.returncode == 0, result.stderr
    assert_complete(out)


@pytest.mark.parametrize("nested", [False, True])
def test_local_folder(tiny_spider, tmp_path, fetch, nested):
    source = tiny_spider
    if nested:  # a folder that holds the release in spider_data/, as an unpacked zip does
        source = tmp_path / "unpacked"
        (source).mkdir()
        tiny_spider.rename(source / "spider_data")
    result, out = fetch(source)
    assert result.returncode == 0, result.stderr
    assert_complete(out)


def test_missing_local_path(fetch, tmp_path):
    result, out = fetch(tmp_path / "nowhere" / "spider_data.zip")
    line = one_error_line(result)
    assert "data.source" in line and "does not exist" in line


def test_zip_without_spider_files(tmp_path, fetch):
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("spider_data/README.txt", "not the data")
        zf.writestr("spider_data/dev.json", "[]")
    line = one_error_line(fetch(archive)[0])
    assert "not a Spider release" in line and "tables.json" in line and "database/" in line


def test_bad_sha256_param(tiny_spider_zip, fetch):
    line = one_error_line(fetch(tiny_spider_zip, "abc")[0])
    assert "data.sha256" in line


def files_under(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


def flip_middle(archive: Path, count: int = 400) -> Path:
    """Invert `count` bytes in the middle of the file, as a bad disk or transfer would."""
    data = bytearray(archive.read_bytes())
    start = len(data) // 2 - count // 2
    data[start:start + count] = bytes(b ^ 0xFF for b in data[start:start + count])
    archive.write_bytes(bytes(data))
    return archive


def damaged_zip(tiny_spider: Path, folder: Path, kind: str) -> Path:
    """A tiny Spider zip damaged so that reading it raises `kind`'s error (checked here, so the
    test cannot drift into testing something else)."""
    if kind == "zlib":  # deflated data inverted in the middle: the decompressor chokes
        archive = flip_middle(zip_tiny_spider(tiny_spider, folder / "flipped.zip"))
        expected = zlib.error
    elif kind == "crc":  # stored (uncompressed) data changed: only the CRC-32 tells
        archive = folder / "stored.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("spider_data/tables.json", (tiny_spider / "tables.json").read_bytes())
            zf.writestr("spider_data/dev.json", (tiny_spider / "dev.json").read_bytes())
        flip_middle(archive, 40)
        expected = zipfile.BadZipFile
    else:  # "header": an entry's local header overwritten
        archive = zip_tiny_spider(tiny_spider, folder / "header.zip")
        with zipfile.ZipFile(archive) as zf:
            offset = zf.getinfo("spider_data/dev.json").header_offset
        data = bytearray(archive.read_bytes())
        data[offset:offset + 4] = b"XXXX"
        archive.write_bytes(bytes(data))
        expected = zipfile.BadZipFile
    with pytest.raises(expected), zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            zf.read(info)
    return archive


@pytest.mark.parametrize("kind", ["zlib", "crc", "header"])
def test_damaged_zip_is_one_clear_line_and_keeps_the_previous_copy(tiny_spider, tmp_path, fetch, kind):
    archive = damaged_zip(tiny_spider, tmp_path, kind)
    marker = previous_copy(tmp_path / "project" / "data" / "spider")
    before = files_under(tmp_path)
    result, out = fetch(archive)
    line = one_error_line(result)
    assert line.startswith(f"error: data.source: {archive} is corrupt: damaged data inside the zip (")
    assert line.endswith("Download it again")
    assert marker.read_text(encoding="utf-8") == "[]"
    assert files_under(tmp_path) - before == {Path("project/params.yaml")}  # nothing extracted
    assert no_leftovers(out)


def test_truncated_zip_says_cut_short(tiny_spider_zip, tmp_path, fetch):
    body = tiny_spider_zip.read_bytes()
    archive = tmp_path / "short.zip"
    archive.write_bytes(body[: len(body) * 2 // 3])
    result, out = fetch(archive)
    line = one_error_line(result)
    assert f"{archive} is cut short: it starts like a zip but ends after" in line
    assert line.endswith("Download it again")
    assert not out.exists() and no_leftovers(out)


def test_html_page_renamed_zip(tmp_path, fetch):
    archive = tmp_path / "spider_data.zip"
    archive.write_bytes(b"\n  " + PAGE)
    line = one_error_line(fetch(archive)[0])
    assert f"{archive} is an HTML page, not a zip: the link gave a web page" in line
    assert "data.source" in line


@pytest.mark.parametrize("content, expected", [
    (b"", "is empty, not a zip"),
    (b"name,value\n1,2\n", "is not a zip file (give a Spider zip, a Spider folder or an http(s) URL)"),
])
def test_other_files_that_are_not_zips(tmp_path, fetch, content, expected):
    archive = tmp_path / "spider_data.zip"
    archive.write_bytes(content)
    assert expected in one_error_line(fetch(archive)[0])


def test_damaged_end_of_zip_is_not_called_cut_short(tiny_spider_zip, fetch):
    data = bytearray(tiny_spider_zip.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    data[end + 16:end + 20] = b"\xff\xff\xff\x7f"  # the table of contents' offset, now past the end
    tiny_spider_zip.write_bytes(bytes(data))
    line = one_error_line(fetch(tiny_spider_zip)[0])
    assert "is corrupt" in line and "cut short" not in line


def unsafe_zip(path: Path, name: str, symlink: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("spider_data/tables.json", "[]")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd" if symlink else "gotcha")
    return path


@pytest.mark.parametrize("name, symlink", [
    ("../evil", False), ("spider_data/../../evil", False), ("/tmp/evil", False),
    ("C:/evil", False), ("..\\evil", False), ("spider_data/link", True),
])
def test_unsafe_zip_entries_are_rejected(tmp_path, name, symlink):
    dest = tmp_path / "a" / "b"
    with pytest.raises(SqloraError, match="unsafe zip entry"):
        extract_spider_zip(unsafe_zip(tmp_path / "bad.zip", name, symlink), dest)
    assert not list(tmp_path.rglob("evil")) and not list(tmp_path.rglob("link"))


@pytest.mark.parametrize("name", ["../evil.txt", "spider_data/../../evil.txt", "../../evil.txt"])
def test_zip_slip_through_the_stage(tmp_path, fetch, name):
    marker = previous_copy(tmp_path / "project" / "data" / "spider")
    result, out = fetch(unsafe_zip(tmp_path / "bad.zip", name))
    assert f"unsafe zip entry {name!r}" in one_error_line(result)
    assert not list(tmp_path.rglob("evil*")) and not list(tmp_path.parent.glob("evil*"))
    assert marker.read_text(encoding="utf-8") == "[]" and no_leftovers(out)


def test_replace_dir_swaps_folders(tmp_path):
    old, new = tmp_path / "spider", tmp_path / "new"
    old.mkdir()
    (old / "old.txt").write_text("old", encoding="utf-8")
    new.mkdir()
    (new / "new.txt").write_text("new", encoding="utf-8")
    replace_dir(new, old)
    assert [p.name for p in old.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spider"]
