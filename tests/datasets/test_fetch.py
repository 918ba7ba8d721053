"""`cfrec fetch` against a local HTTP server on 127.0.0.1 (Range requests, injected faults); no internet."""

import hashlib
import io
import json
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from cfmodel.cli import main
from cfmodel.datasets.fetch import DATASETS, DatasetSpec, Download, Limits, fetch, fetch_dataset
from cfmodel.errors import CfrecError

U_DATA = "".join(
    f"{u}\t{i}\t{(u + i) % 5 + 1}\t{880000000 + u * 100 + i}\n" for u in range(1, 30) for i in range(1, 20)
)
U_ITEM = "".join(f"{i}|Film {i} (199{i % 10})|01-Jan-1995||http://x|" + "|".join("0" * 19) + "\n" for i in range(1, 20))


def ml_zip(extra: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in {"ml-100k/u.data": U_DATA, "ml-100k/u.item": U_ITEM, **(extra or {})}.items():
            zf.writestr(name, text.encode("latin-1"))
    return buffer.getvalue()


class FileServer:
    """Serves `files` by name; each queued fault applies to one request: 'error' (HTTP 500),
    'missing' (404), 'truncate' (half the body, then the connection closes), 'corrupt' (a flipped byte)."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.faults, self.requests = files, [], []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append((name, self.headers.get("Range")))
                fault = server.faults.pop(0) if server.faults else None
                if fault == "error":
                    return self.send_error(500, "Internal Server Error")
                if fault == "missing" or name not in server.files:
                    return self.send_error(404, "Not Found")
                data = server.files[name]
                if fault == "trickle":  # announces the whole file, then sends a byte every 0.2 s
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    for byte in data[:50]:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.2)
                    return None
                if fault == "corrupt":
                    data = data[:10] + bytes([data[10] ^ 0xFF]) + data[11:]
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                if start >= len(data) > 0:
                    return self.send_error(416, "Range Not Satisfiable")
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                self.wfile.write(body[: len(body) // 2] if fault == "truncate" else body)
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    zipped = ml_zip()
    srv = FileServer({"ml-test.zip": zipped})
    srv.zipped, srv.md5 = zipped, hashlib.md5(zipped).hexdigest()
    yield srv
    srv.close()


def spec_for(server, **download):
    return DatasetSpec(
        "ml-test", (Download(server.url + "ml-test.zip", **download),), "ml-100k", "movielens-100k", archive=True
    )


def fetch_fast(spec, dest, **kwargs):
    return fetch_dataset(spec, dest, backoff=0, timeout=10, **kwargs)


def test_downloads_verifies_and_unpacks_then_skips_a_verified_file(server, tmp_path):
    result = fetch_fast(spec_for(server, md5=server.md5, size=len(server.zipped)), tmp_path)
    assert result["input"] == str(tmp_path / "ml-100k") and result["source"] == "movielens-100k"
    assert (tmp_path / "ml-100k" / "u.data").read_text() == U_DATA
    assert (tmp_path / "ml-test.zip").read_bytes() == server.zipped
    assert result["files"] == [
        {"file": "ml-test.zip", "bytes": len(server.zipped), "downloaded": True, "resumed_from": 0}
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    again = fetch_fast(spec_for(server, md5=server.md5), tmp_path)
    assert again["files"][0]["downloaded"] is False and len(server.requests) == 1


def test_a_truncated_transfer_is_resumed_with_a_range_request(server, tmp_path):
    server.faults = ["truncate"]
    result = fetch_fast(spec_for(server, md5=server.md5), tmp_path)
    half = (len(server.zipped)) // 2
    assert server.requests == [("ml-test.zip", None), ("ml-test.zip", f"bytes={half}-")]
    assert (tmp_path / "ml-test.zip").read_bytes() == server.zipped and result["files"][0]["downloaded"]


def test_server_errors_are_retried_then_reported(server, tmp_path):
    server.faults = ["error", "error"]
    fetch_fast(spec_for(server, md5=server.md5), tmp_path, retries=3)
    assert len(server.requests) == 3

    server.faults, server.requests = ["error"] * 5, []
    with pytest.raises(CfrecError, match=r"download of .*ml-test.zip failed after 3 attempts: HTTP 500"):
        fetch_fast(spec_for(server, md5=server.md5), tmp_path / "other", retries=3)
    assert len(server.requests) == 3


def test_a_missing_file_is_not_retried(server, tmp_path):
    server.faults = ["missing"]
    with pytest.raises(CfrecError, match="HTTP 404 Not Found"):
        fetch_fast(spec_for(server), tmp_path)
    assert len(server.requests) == 1


def test_checksum_mismatch_retries_from_scratch_then_fails_and_leaves_nothing(server, tmp_path):
    server.faults = ["corrupt"]
    fetch_fast(spec_for(server, md5=server.md5), tmp_path)  # one bad copy: fetched again, now fine
    assert len(server.requests) == 2 and (tmp_path / "ml-test.zip").read_bytes() == server.zipped

    with pytest.raises(CfrecError) as error:
        fetch_fast(spec_for(server, md5="0" * 32), tmp_path / "bad")
    assert f"is corrupt: MD5 {server.md5} differs from the published {'0' * 32}; the file was removed" in str(
        error.value
    )
    assert not (tmp_path / "bad").exists() or list((tmp_path / "bad").iterdir()) == []


def test_a_stale_partial_file_that_does_not_verify_is_replaced(server, tmp_path):
    (tmp_path / ".ml-test.zip.part").write_bytes(b"not the start of the archive")
    fetch_fast(spec_for(server, md5=server.md5), tmp_path)
    assert server.requests == [("ml-test.zip", "bytes=28-"), ("ml-test.zip", None)]
    assert (tmp_path / "ml-test.zip").read_bytes() == server.zipped


def test_size_mismatch_is_an_error(server, tmp_path):
    with pytest.raises(CfrecError, match=f"size {len(server.zipped)} bytes differs from the known size, 123 bytes"):
        fetch_fast(spec_for(server, size=123), tmp_path)


def test_archives_that_escape_their_folder_or_lack_it_are_refused(tmp_path):
    srv = FileServer({"evil.zip": ml_zip({"../evil.txt": "x"}), "other.zip": ml_zip()})
    try:
        with pytest.raises(CfrecError, match="has a member outside its folder: ../evil.txt"):
            fetch_fast(
                DatasetSpec("e", (Download(srv.url + "evil.zip"),), "ml-100k", "movielens-100k", archive=True),
                tmp_path / "a",
            )
        with pytest.raises(CfrecError, match="does not hold a ml-1m/ folder"):
            fetch_fast(
                DatasetSpec("o", (Download(srv.url + "other.zip"),), "ml-1m", "movielens-1m", archive=True),
                tmp_path / "b",
            )
    finally:
        srv.close()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "a" / "ml-100k").exists()


def test_registry_points_at_the_official_addresses():
    urls = {name: [f.url for f in spec.files] for name, spec in DATASETS.items()}
    assert urls["movielens-100k"] == ["https://files.grouplens.org/datasets/movielens/ml-100k.zip"]
    assert urls["movielens-25m"] == ["https://files.grouplens.org/datasets/movielens/ml-25m.zip"]
    assert urls["goodbooks-10k"][0] == "https://raw.githubusercontent.com/zygmuntz/goodbooks-10k/master/ratings.csv"
    assert (
        urls["movietweetings"][0]
        == "https://raw.githubusercontent.com/sidooms/MovieTweetings/master/latest/ratings.dat"
    )
    assert {DATASETS[n].source for n in DATASETS} <= {
        "movielens-100k",
        "movielens-1m",
        "movielens-10m",
        "movielens-latest",
        "goodbooks",
        "movietweetings",
    }
    with pytest.raises(CfrecError, match="unknown data set 'netflix'"):
        fetch("netflix", "/tmp")


def test_cli_refuses_an_archive_that_does_not_match_the_published_checksum(server, tmp_path, capsys):
    server.files["ml-100k.zip"] = server.zipped  # our test archive is not GroupLens's
    code = main(["fetch", "movielens-100k", "--dest", str(tmp_path), "--base-url", server.url, "--retries", "1"])
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the warning about the first bad copy
    assert code == 2 and error.startswith("cfrec fetch: error: download of ")
    assert (
        "ml-100k.zip is corrupt: MD5" in error
        and "differs from the published 0e33842e24a9c977be4e0107933c0723" in error
    )


def test_cli_fetches_movietweetings_from_a_mirror_and_ingests_it(spark, tmp_path, capsys):
    srv = FileServer(
        {
            "ratings.dat": b"1::0114508::8::1381006850\n2::0120735::10::1376753200\n2::0499549::0::1376753300\n",
            "movies.dat": "0114508::Species (1995)::Action|Horror\n0120735::Amélie (2001)::\n".encode(),
            "users.dat": b"1::177651718\n2::32346723\n",
        }
    )
    try:
        assert main(["fetch", "movietweetings", "--dest", str(tmp_path / "data"), "--base-url", srv.url]) == 0
    finally:
        srv.close()
    fetched = json.loads(capsys.readouterr().out)
    assert fetched["input"] == str(tmp_path / "data" / "movietweetings") and fetched["source"] == "movietweetings"
    assert (
        main(
            [
                "ingest",
                "--source",
                fetched["source"],
                "--input",
                fetched["input"],
                "--warehouse",
                str(tmp_path / "wh"),
                "--run-date",
                "2026-05-01",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert (report["clean_rows"], report["item_rows"], report["ratings_on_unknown_items"]) == (3, 2, 1)
    items = pd.read_parquet(tmp_path / "wh" / "items").set_index("item_id")
    assert items.loc["0120735", "title"] == "Amélie (2001)" and list(items.loc["0120735", "genres"]) == []
    datasets = pd.read_parquet(tmp_path / "wh" / "datasets")
    assert datasets[["rating_min", "rating_max"]].values.tolist() == [[0.0, 10.0]]


def test_a_server_that_trickles_meets_the_deadline(server, tmp_path):
    server.faults = ["trickle"]
    started = time.monotonic()
    with pytest.raises(CfrecError, match=r"took longer than 1 s, the limit \(--max-seconds\)"):
        fetch_fast(spec_for(server), tmp_path, limits=Limits(seconds_per_file=1))
    assert time.monotonic() - started < 5  # one byte every 0.2 s never trips the per-read timeout
    assert not (tmp_path / "ml-100k").exists()


def test_a_file_larger_than_the_limit_is_refused(server, tmp_path):
    with pytest.raises(CfrecError, match=r"passed 100 bytes, the limit \(--max-bytes\)"):
        fetch_fast(spec_for(server), tmp_path, limits=Limits(max_bytes=100))


def test_an_archive_that_unpacks_to_far_more_than_it_holds_is_refused(tmp_path, capsys):
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/u.data", b"\0" * (50 << 20))  # 50 MB of zeros in about 50 KB
    srv = FileServer({"ml-test.zip": bomb.getvalue()})
    try:
        with pytest.raises(CfrecError, match="would unpack to 52428800 bytes from .*50 times its size"):
            fetch_fast(spec_for(srv), tmp_path / "a")
        assert not (tmp_path / "a" / "ml-100k").exists()
        limits = Limits(max_unpacked_bytes=1 << 20, max_ratio=10_000)
        with pytest.raises(CfrecError, match="past the limits of 1048576 bytes"):
            fetch_fast(spec_for(srv), tmp_path / "b", limits=limits)
    finally:
        srv.close()
