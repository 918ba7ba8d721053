"""`cfrec fetch`: download public rating data sets from their official addresses.

Each file goes to a hidden `.part` file beside its destination, is checked (length the server
announced, known size, known MD5) and only then renamed into place, so a destination file is
always complete. An interrupted transfer is resumed with an HTTP Range request; network errors
and server errors are retried with exponential backoff. A file whose size or checksum is wrong is
deleted, downloaded once more from scratch, and reported as an error if still wrong. Archives are
extracted into a temporary folder and renamed into place the same way.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

from cfmodel.errors import CfrecError
from cfmodel.paths import resolved

log = logging.getLogger(__name__)

GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
GOODBOOKS = "https://raw.githubusercontent.com/zygmuntz/goodbooks-10k/master/"
MOVIETWEETINGS = "https://raw.githubusercontent.com/sidooms/MovieTweetings/master/latest/"
CHUNK = 1 << 20
# Client errors that may pass on a retry: timeout, too many requests.
RETRYABLE_CLIENT_ERRORS = {408, 429}


@dataclass(frozen=True)
class Download:
    url: str
    size: int | None = None  # bytes, when known and stable
    md5: str | None = None  # published checksum, when the file is versioned

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    files: tuple[Download, ...]
    folder: str  # the folder under --dest that holds the source's files (ingest --input)
    source: str  # the ingest --source for it
    archive: bool = False  # a zip whose top folder is `folder`


DATASETS = {
    spec.name: spec
    for spec in [
        # GroupLens publishes an MD5 beside each stable archive; ml-latest-small is regenerated
        # from time to time, so only the announced length is checked for it.
        DatasetSpec(
            "movielens-100k",
            (Download(GROUPLENS + "ml-100k.zip", md5="0e33842e24a9c977be4e0107933c0723"),),
            "ml-100k",
            "movielens-100k",
            archive=True,
        ),
        DatasetSpec(
            "movielens-1m",
            (Download(GROUPLENS + "ml-1m.zip", md5="c4d9eecfca2ab87c1945afe126590906"),),
            "ml-1m",
            "movielens-1m",
            archive=True,
        ),
        DatasetSpec(
            "movielens-10m",
            (Download(GROUPLENS + "ml-10m.zip", md5="ce571fd55effeba0271552578f2648bd"),),
            "ml-10M100K",
            "movielens-10m",
            archive=True,
        ),
        DatasetSpec(
            "movielens-latest-small",
            (Download(GROUPLENS + "ml-latest-small.zip"),),
            "ml-latest-small",
            "movielens-latest",
            archive=True,
        ),
        DatasetSpec(
            "movielens-25m",
            (Download(GROUPLENS + "ml-25m.zip", md5="6b51fb2759a8657d3bfcbfc42b592ada"),),
            "ml-25m",
            "movielens-latest",
            archive=True,
        ),
        DatasetSpec(
            "goodbooks-10k",
            tuple(Download(GOODBOOKS + f) for f in ("ratings.csv", "books.csv", "to_read.csv")),
            "goodbooks-10k",
            "goodbooks",
        ),
        DatasetSpec(
            "movietweetings",
            tuple(Download(MOVIETWEETINGS + f) for f in ("ratings.dat", "movies.dat", "users.dat")),
            "movietweetings",
            "movietweetings",
        ),
    ]
}


class TransientError(Exception):
    """A transfer that failed in a way a retry can fix."""


@dataclass(frozen=True)
class Limits:
    """Bounds on one data set's download: a server that trickles, a file far larger than any rating
    data set, or an archive that unpacks to far more than it holds (a zip bomb) ends it."""

    seconds_per_file: float = 3600.0  # all attempts at one file together
    max_bytes: int = 4 << 30  # per downloaded file
    max_unpacked_bytes: int = 16 << 30  # per archive
    max_ratio: float = 50.0  # unpacked bytes per archive byte; rating files compress about 5:1


def _check_progress(url: str, size: int, deadline: float, limits: Limits) -> None:
    if size > limits.max_bytes:
        raise CfrecError(f"download of {url} passed {limits.max_bytes} bytes, the limit (--max-bytes)")
    if time.monotonic() > deadline:
        raise CfrecError(f"download of {url} took longer than {limits.seconds_per_file:g} s, the limit (--max-seconds)")


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, item: Download, announced: int | None) -> str | None:
    """Why `path` is not the expected file, or None when it is."""
    size = path.stat().st_size
    for expected, what in ((announced, "the length the server announced"), (item.size, "the known size")):
        if expected is not None and size != expected:
            return f"size {size} bytes differs from {what}, {expected} bytes"
    if item.md5 is not None and (actual := file_md5(path)) != item.md5:
        return f"MD5 {actual} differs from the published {item.md5}"
    return None


def _transfer(url: str, part: Path, timeout: float, deadline: float, limits: Limits) -> int | None:
    """Fetch `url` into `part`, resuming from its current length; returns the announced total."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "cfrec-fetch", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left past what we have: the file is complete
            return None
        if exc.code >= 500 or exc.code in RETRYABLE_CLIENT_ERRORS:
            raise TransientError(f"HTTP {exc.code} {exc.reason}") from None
        raise CfrecError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    with response:
        resumed = have > 0 and response.status == 206
        if resumed:
            start = response.headers.get("Content-Range", "").split(" ")[-1].split("-")[0]
            if start != str(have):
                raise TransientError(f"server resumed at byte {start}, not {have}")
        length = response.headers.get("Content-Length")
        total = (have if resumed else 0) + int(length) if length is not None else None
        if total is not None:
            _check_progress(url, total, deadline, limits)
        written = have if resumed else 0
        with open(part, "ab" if resumed else "wb") as out:
            # read1 returns what one receive brings, so a server that trickles meets the deadline.
            for chunk in iter(lambda: response.read1(CHUNK), b""):
                out.write(chunk)
                written += len(chunk)
                _check_progress(url, written, deadline, limits)
    if total is not None and part.stat().st_size < total:
        raise TransientError(f"connection closed after {part.stat().st_size} of {total} bytes")
    return total


def download(
    item: Download,
    target: Path,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    limits: Limits | None = None,
) -> dict:
    """Download `item` to `target` (skipped when already there and verified); returns what happened."""
    limits = limits or Limits()
    deadline = time.monotonic() + limits.seconds_per_file
    if target.is_file() and (item.md5 or item.size) and _verify(target, item, None) is None:
        return {"file": target.name, "bytes": target.stat().st_size, "downloaded": False}
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part")
    resumed_from = part.stat().st_size if part.exists() else 0
    for fresh_start in (False, True):
        announced, attempt = None, 0
        while True:
            attempt += 1
            try:
                announced = _transfer(item.url, part, timeout, deadline, limits)
                break
            except (TransientError, urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                if attempt >= retries:
                    raise CfrecError(
                        f"download of {item.url} failed after {attempt} attempts: {exc} "
                        f"({part.stat().st_size if part.exists() else 0} bytes kept in {part} "
                        "for the next try to resume)"
                    ) from None
                delay = backoff * 2 ** (attempt - 1)
                log.warning("download of %s: %s; retrying in %.1fs", item.url, exc, delay)
                time.sleep(delay)
        problem = _verify(part, item, announced)
        if problem is None:
            os.replace(part, target)
            return {
                "file": target.name,
                "bytes": target.stat().st_size,
                "downloaded": True,
                "resumed_from": resumed_from,
            }
        part.unlink()
        if fresh_start:
            raise CfrecError(f"download of {item.url} is corrupt: {problem}; the file was removed")
        log.warning("download of %s: %s; downloading again from scratch", item.url, problem)
        resumed_from = 0
    raise AssertionError("unreachable")


def _check_unpacked_size(archive: Path, zf: zipfile.ZipFile, limits: Limits) -> None:
    unpacked = sum(info.file_size for info in zf.infolist())
    packed = max(archive.stat().st_size, 1)
    if unpacked > limits.max_unpacked_bytes or unpacked > limits.max_ratio * packed:
        raise CfrecError(
            f"{archive.name} would unpack to {unpacked} bytes from {packed}: past the limits of "
            f"{limits.max_unpacked_bytes} bytes (--max-unpacked-bytes) and {limits.max_ratio:g} times its size"
        )


def _extract(archive: Path, dest: Path, folder: str, limits: Limits) -> Path:
    """Unpack `archive`, whose top folder is `folder`, to dest/folder, replacing it atomically."""
    token = uuid.uuid4().hex[:12]
    scratch = dest / f".extract-{folder}-{token}"
    final, old = dest / folder, dest / f".old-{folder}-{token}"
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                resolved = (scratch / member).resolve()
                if not resolved.is_relative_to(scratch.resolve()):
                    raise CfrecError(f"{archive.name} has a member outside its folder: {member}")
            _check_unpacked_size(archive, zf, limits)
            bad = zf.testzip()
            if bad is not None:
                raise CfrecError(f"{archive.name} is damaged: CRC error in {bad}")
            zf.extractall(scratch)
        if not (scratch / folder).is_dir():
            raise CfrecError(f"{archive.name} does not hold a {folder}/ folder")
        if final.exists():
            final.rename(old)
        (scratch / folder).rename(final)
    except zipfile.BadZipFile as exc:
        raise CfrecError(f"{archive.name} is not a valid zip archive: {exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return final


def with_base_url(spec: DatasetSpec, base_url: str) -> DatasetSpec:
    """The same files fetched from a mirror holding them flat under `base_url`."""
    base = base_url.rstrip("/") + "/"
    return replace(spec, files=tuple(replace(f, url=base + f.filename) for f in spec.files))


def fetch_dataset(
    spec: DatasetSpec,
    dest: str | Path,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    limits: Limits | None = None,
) -> dict:
    limits = limits or Limits()
    dest = resolved(dest, "destination")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CfrecError(f"cannot create {dest}: {exc.strerror or exc}") from None
    files_dir = dest if spec.archive else dest / spec.folder
    results = [download(f, files_dir / f.filename, retries, backoff, timeout, limits) for f in spec.files]
    if spec.archive:
        archive = files_dir / spec.files[0].filename
        if any(r["downloaded"] for r in results) or not (dest / spec.folder).is_dir():
            _extract(archive, dest, spec.folder, limits)
    return {"dataset": spec.name, "source": spec.source, "input": str(dest / spec.folder), "files": results}


def fetch(name: str, dest: str | Path, base_url: str | None = None, **kwargs) -> dict:
    """Download the data set `name` into `dest`; the result names the folder to ingest and its source."""
    try:
        spec = DATASETS[name]
    except KeyError:
        raise CfrecError(f"unknown data set '{name}' (known: {', '.join(sorted(DATASETS))})") from None
    if base_url:
        spec = with_base_url(spec, base_url)
    return fetch_dataset(spec, dest, **kwargs)
