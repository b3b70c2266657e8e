"""Downloads that resume, and tar archives read once from front to back.

`download(url, dest)` fetches over HTTP(S) with urllib into `dest + '.part'`, resuming an
interrupted transfer with a Range request (guarded by If-Range, so a file that changed on the
server is fetched afresh), retrying failed attempts with a doubling wait, and showing a tqdm
progress bar. It renames the file to `dest` only when it has the size the server announced.

`ArchiveStream` reads a tar archive (gzipped or not) as a stream: never the whole file into
memory, one pass, hashing the bytes (sha256, md5) as they go by. A gzipped archive is
decompressed by `gzip.GzipFile`, which checks the CRC and length stored at its end: a
truncated archive raises EOFError and a corrupt one BadGzipFile, both turned into a one-line
`FetchError` naming the file.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import json
import logging
import os
import posixpath
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from typing import IO, Callable, Iterator

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT_S = 60.0
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_GZIP_MAGIC = b"\x1f\x8b"


class FetchError(Exception):
    """A download or archive problem; the message is one line naming the URL or file."""


def _progress(total: int | None, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
                unit_divisor=1024, disable=not enabled, leave=False)


# ----------------------------------------------------------------------------- HTTP


def _server_md5(headers) -> str | None:
    """The base64 md5 in Google Cloud Storage's `x-goog-hash: crc32c=...,md5=...` headers."""
    for value in headers.get_all("x-goog-hash") or []:
        for item in value.split(","):
            key, _, digest = item.strip().partition("=")
            if key == "md5" and digest:
                return digest
    return None


def _load_state(path: str, url: str) -> dict:
    """What an earlier, interrupted download of url into path + '.part' learnt of the file."""
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return {"url": url}
    return state if isinstance(state, dict) and state.get("url") == url else {"url": url}


def _save_state(path: str, state: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(path + ".tmp", path)


def _request(url: str, have: int, state: dict):
    """Opens url, asking for the bytes from `have` on when some are there already."""
    req = urllib.request.Request(url, headers={"User-Agent": "luna_lra-fetch"})
    if have:
        req.add_header("Range", f"bytes={have}-")
        validator = state.get("etag") or state.get("last_modified")
        if validator:  # the server sends the whole file (200) if it changed since
            req.add_header("If-Range", validator)
    return urllib.request.urlopen(req, timeout=TIMEOUT_S)


def _start_offset(resp, have: int, url: str) -> int:
    """Where the body of this response starts in the file (0 when the server ignored Range)."""
    if resp.status != 206:
        return 0
    m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
    if not m or int(m.group(1)) != have:
        raise FetchError(f"{url}: the server answered a request for bytes {have}- with "
                         f"Content-Range {resp.headers.get('Content-Range')!r}")
    return have


def _total_size(resp, start: int) -> int | None:
    if resp.status == 206:
        total = resp.headers.get("Content-Range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = resp.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def _transfer(url: str, part: str, state: dict, progress: bool) -> None:
    """One attempt: appends what the server sends to `part` (restarting it if the server
    sends the whole file). Raises on any interruption; `part` keeps what arrived."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    with _request(url, have, state) as resp:
        start = _start_offset(resp, have, url)
        total = _total_size(resp, start)
        if start == 0 and have:
            log.info("%s: the server sent the whole file; starting again", url)
        state.update(total=total, etag=resp.headers.get("ETag"),
                     last_modified=resp.headers.get("Last-Modified"),
                     md5_base64=_server_md5(resp.headers) or state.get("md5_base64"))
        _save_state(part + ".json", state)
        with open(part, "r+b" if start else "wb") as out, \
                _progress(total, start, os.path.basename(part[:-5]), progress) as bar:
            out.seek(start)
            out.truncate()
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    got = os.path.getsize(part)
    if total is not None and got != total:
        raise http.client.IncompleteRead(b"", total - got)


def _retryable(e: Exception) -> bool:
    if isinstance(e, urllib.error.HTTPError):
        return e.code in _RETRY_STATUS
    return isinstance(e, (OSError, http.client.HTTPException))


def download(url: str, dest: str, *, retries: int = 5, retry_wait: float = 2.0,
             progress: bool = True) -> dict:
    """Downloads url to dest (unless dest exists) and returns {'url', 'size', 'md5_base64'}
    (the md5 the server announced, or None).

    Bytes arrive in dest + '.part'; an interrupted download (this call's or an earlier
    process's) resumes from there. `retries` attempts in a row may fail without bringing a
    byte before it gives up; the wait between them starts at retry_wait seconds and doubles.
    """
    part = dest + ".part"
    state = _load_state(part + ".json", url)
    if os.path.isfile(dest):
        return {"url": url, "size": os.path.getsize(dest), "md5_base64": state.get("md5_base64")}
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    if state.get("total") is None and os.path.exists(part):
        os.unlink(part)  # bytes of another URL or of unknown origin: do not resume them
    have = os.path.getsize(part) if os.path.exists(part) else 0
    log.info("downloading %s to %s%s", url, dest, f" (resuming after {have} bytes)" if have else "")
    failures = 0
    while True:
        have = os.path.getsize(part) if os.path.exists(part) else 0
        if state.get("total") is not None and have == state["total"]:
            break
        try:
            _transfer(url, part, state, progress)
            break
        except FetchError:
            raise
        except Exception as e:  # noqa: BLE001 - sorted into retry / give up below
            if isinstance(e, urllib.error.HTTPError) and e.code == 416 and have:
                os.unlink(part)  # the range is past the end: the file changed; start again
                continue
            got = os.path.getsize(part) if os.path.exists(part) else 0
            failures = 0 if got > have else failures + 1
            if not _retryable(e) or failures > retries:
                raise FetchError(_failure_message(url, part, state, e)) from None
            wait = retry_wait * 2 ** max(failures - 1, 0)
            log.warning("%s: %s after %d bytes; retrying in %.0f s", url, _why(e), got, wait)
            time.sleep(wait)
    os.replace(part, dest)
    if os.path.exists(part + ".json"):
        os.unlink(part + ".json")
    return {"url": url, "size": os.path.getsize(dest), "md5_base64": state.get("md5_base64")}


def _why(e: Exception) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, http.client.IncompleteRead):
        return "connection closed early"
    return f"{type(e).__name__}: {e}"


def _failure_message(url: str, part: str, state: dict, e: Exception) -> str:
    got = os.path.getsize(part) if os.path.exists(part) else 0
    total = state.get("total")
    where = f"{got} of {total} bytes" if total else f"{got} bytes"
    keep = f" in {part}; run again to resume" if got else ""
    return f"{url}: download failed ({_why(e)}) with {where}{keep}"


# ----------------------------------------------------------------------------- archives


class _HashingReader:
    """A read-only file wrapper that hashes and counts what is read through it."""

    def __init__(self, f: IO[bytes], on_read: Callable[[int], None]):
        self._f, self._on_read = f, on_read
        self.sha256, self.md5, self.size = hashlib.sha256(), hashlib.md5(), 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.sha256.update(data)
        self.md5.update(data)
        self.size += len(data)
        self._on_read(len(data))
        return data


_ERRORS = (EOFError, OSError, tarfile.TarError, zlib.error)


class _Member:
    """A member's data; errors of the archive underneath (it may end mid-member) are
    FetchErrors naming the archive."""

    def __init__(self, f: IO[bytes], fail: Callable[[Exception], FetchError]):
        self._f, self._fail = f, fail

    def read(self, n: int = -1) -> bytes:
        try:
            return self._f.read(n)
        except _ERRORS as e:
            raise self._fail(e) from None


class ArchiveStream:
    """One front-to-back pass over a tar archive (gzipped or plain):

        with ArchiveStream(path) as archive:
            for name, f in archive.members():   # regular files; name without './'
                ...                              # read f before the next member
            digests = archive.finish()           # {'size', 'sha256', 'md5_base64'}

    Errors while reading (a truncated or corrupt archive) raise FetchError naming the file.
    """

    def __init__(self, path: str, progress: bool = False):
        self.path = path
        try:
            self._file = open(path, "rb")
        except OSError as e:
            raise FetchError(f"{path}: cannot open the archive ({e.strerror or e})") from None
        total = os.fstat(self._file.fileno()).st_size
        self._bar = _progress(total, 0, f"reading {os.path.basename(path)}", progress)
        self._raw = _HashingReader(self._file, self._bar.update)
        gzipped = self._file.read(2) == _GZIP_MAGIC
        self._file.seek(0)
        self._data = gzip.GzipFile(fileobj=self._raw, mode="rb") if gzipped else self._raw

    def __enter__(self) -> "ArchiveStream":
        return self

    def __exit__(self, *exc) -> None:
        self._bar.close()
        self._file.close()

    def _fail(self, e: Exception) -> FetchError:
        truncated = isinstance(e, EOFError) or "unexpected end" in str(e)
        what = "truncated" if truncated else "corrupt or not a tar archive"
        return FetchError(f"{self.path}: {what} ({type(e).__name__}: {e}) after "
                          f"{self._raw.size} bytes; expected a complete (gzipped) tar file")

    def members(self) -> Iterator[tuple[str, IO[bytes]]]:
        try:
            with tarfile.open(fileobj=self._data, mode="r|") as tar:
                for member in tar:
                    if member.isfile():
                        name = posixpath.normpath(member.name.removeprefix("./"))
                        yield name, _Member(tar.extractfile(member), self._fail)
        except _ERRORS as e:
            raise self._fail(e) from None

    def finish(self) -> dict:
        """Reads to the end (so gzip checks its CRC and the hashes cover every byte)."""
        try:
            while self._data.read(CHUNK):
                pass
            while self._raw.read(CHUNK):
                pass
        except _ERRORS as e:
            raise self._fail(e) from None
        md5 = base64.b64encode(self._raw.md5.digest()).decode()
        return {"size": self._raw.size, "sha256": self._raw.sha256.hexdigest(),
                "md5_base64": md5}


def safe_relpath(rel: str, archive: str) -> str:
    """rel if it stays inside the folder it is written to, else FetchError."""
    parts = rel.split("/")
    if rel.startswith("/") or ".." in parts or "" in parts:
        raise FetchError(f"{archive}: refusing the unsafe member name {rel!r}")
    return rel


def extract_members(archive: str, out_dir: str, want: Callable[[str], str | None],
                    progress: bool = False) -> int:
    """Writes each regular file of the archive whose name `want` maps to a relative path
    (None = skip) under out_dir, each via a temporary name. Returns how many it wrote."""
    written = 0
    with ArchiveStream(archive, progress) as stream:
        for name, src in stream.members():
            rel = want(name)
            if rel is None:
                continue
            dest = os.path.join(out_dir, *safe_relpath(rel, archive).split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest + ".part", "wb") as f:
                shutil.copyfileobj(src, f, CHUNK)
            os.replace(dest + ".part", dest)
            written += 1
        stream.finish()
    return written
