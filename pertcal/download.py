"""Fetch a file from mirror URLs (a dataset, or an external resource: pertcal.resources): streamed, resumed, retried,
verified, then moved into place atomically. Also the checksum and AnnData checks a local source gets."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import h5py

from pertcal.io import PertcalInputError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
SCHEMES = ("http", "https", "file")
# Request timeout and rate limiting are the only client errors another attempt can fix.
RETRYABLE_4XX = (408, 429)
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(?:\d+|\*)")


DATASET_FIX = (
    "Fix the dataset's source (url, sha256, size) in config.yaml, or download the file yourself and give it as "
    "source: {path: ...}"
)


class DownloadError(PertcalInputError):
    """No URL gave a complete, verified file; the message names the dataset, every URL tried and why it failed."""


class _AttemptFailed(Exception):
    """One attempt failed; `retry` says whether another attempt at the same URL may succeed."""

    def __init__(self, reason: str, retry: bool):
        super().__init__(reason)
        self.retry = retry


def fetch(
    urls: list[str],
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 4,
    backoff: float = 0.5,
    timeout: float = 60.0,
    dataset: str = "",
    check: Callable[[Path], str | None] | None = None,
    what: str | None = None,
    fix: str = DATASET_FIX,
) -> Path:
    """Download the first of `urls` giving a file of `size` bytes and `sha256` hex digest to `dest`; return `dest`.

    Each URL gets 1 + `retries` attempts, `backoff * 2**k` seconds apart; `timeout` (s) bounds each socket wait.
    Only network errors (and a resumed file that fails verification) are retried: a fresh copy that fails
    verification, or that `check` (the file → why it is unusable, or None) refuses, would only fail again.
    A failure names `what` (default: the dataset) and ends with `fix`, what the user can do about it.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for i, url in enumerate(urls):
        if i:
            part.unlink(missing_ok=True)  # another mirror may serve other bytes, e.g. a newer version of the file
        reason = _fetch_one(url, part, sha256, size, retries, backoff, timeout, dataset, check)
        if reason is None:
            os.replace(part, dest)
            log.info("%s: downloaded %s from %s", dataset, dest, url)
            return dest
        failures.append(f"{url} -> {reason}")
    part.unlink(missing_ok=True)
    tried = "; ".join(failures) if failures else "no URL given (field 'urls' is empty)"
    raise DownloadError(f"{what or f'dataset {dataset!r}'}: could not download {dest}; URLs tried: {tried}. {fix}")


def _fetch_one(url, part: Path, sha256, size, retries, backoff, timeout, dataset, check) -> str | None:
    """Try one URL up to 1 + `retries` times into `part`; return None once `part` is verified, else the last reason."""
    if urllib.parse.urlsplit(url).scheme.lower() not in SCHEMES:
        return f"unsupported URL scheme (expected one of {', '.join(SCHEMES)})"
    for attempt in range(max(retries, 0) + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            resumed = _download(url, part, timeout)
            reason = _mismatch(part, sha256, size)
            if reason is None and check is not None:
                reason = check(part)
            if reason is None:
                return None
            part.unlink()
            # A resumed file may hold a stale prefix from another run; a fresh copy that fails cannot improve.
            retry = resumed
        except _AttemptFailed as e:
            reason, retry = str(e), e.retry
        log.warning("%s: attempt %d/%d at %s failed: %s", dataset, attempt + 1, retries + 1, url, reason)
        if not retry:
            break
    return reason


def _download(url: str, part: Path, timeout: float) -> bool:
    """Stream `url` into `part`, continuing it with a Range request if it exists; return whether it was continued."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "pertcal"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status == 206:
                start = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if start is None or int(start.group(1)) != offset:
                    part.unlink()
                    raise _AttemptFailed(f"partial answer does not start at byte {offset}", retry=True)
                mode = "ab"
            else:  # a 200 (or a file:// URL) answers a Range request with the whole body
                offset, mode = 0, "wb"
            expected = response.headers.get("Content-Length")
            received = _stream(response, part, mode)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            complete = _UNSATISFIED_RANGE.match(e.headers.get("Content-Range", ""))
            if complete and int(complete.group(1)) == offset:
                return True  # an earlier run already received every byte
            part.unlink()
            raise _AttemptFailed(f"HTTP 416: partial file of {offset} bytes is longer than the remote file", retry=True)
        raise _AttemptFailed(f"HTTP {e.code} {e.reason}", retry=e.code >= 500 or e.code in RETRYABLE_4XX)
    except urllib.error.URLError as e:
        # A missing or unreadable local file (file:// URL) will not appear by waiting.
        raise _AttemptFailed(f"{e.reason}", retry=not isinstance(e.reason, (FileNotFoundError, PermissionError)))
    except (OSError, http.client.HTTPException) as e:
        raise _AttemptFailed(f"{type(e).__name__}: {e}", retry=True)
    if expected is not None and received < int(expected):
        raise _AttemptFailed(f"truncated body: {received} of {expected} bytes", retry=True)
    return offset > 0


def _stream(response, part: Path, mode: str) -> int:
    """Copy `response` into `part` chunk by chunk (bytes kept on disk if the connection drops); return bytes written."""
    received = 0
    with open(part, mode) as f:
        while chunk := response.read(CHUNK_BYTES):
            f.write(chunk)
            received += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    return received


def _mismatch(part: Path, sha256: str | None, size: int | None) -> str | None:
    """Return why `part` fails the expected size (bytes) or sha256 (hex), or None when it matches."""
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        return f"size mismatch: {actual_size} bytes, expected {size}"
    if sha256 is not None:
        digest = file_sha256(part)
        if digest != sha256.lower():
            return f"sha256 mismatch: got {digest}, expected {sha256.lower()}"
    return None


def file_sha256(path) -> str:
    """Hex digest of a file, read in chunks (file_digest streams: memory stays small for a many-GB file)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_sha256(path: str | os.PathLike, sha256: str, *, dataset: str) -> str:
    """Return the sha256 hex digest of `path`; raise if it is not the declared `sha256`."""
    digest = file_sha256(path)
    if digest != sha256.lower():
        raise PertcalInputError(
            f"dataset {dataset!r}, file {path}: field source.sha256 does not match the file: expected "
            f"{sha256.lower()}, got {digest}. If the file is the intended one, update source.sha256 in config.yaml; "
            "otherwise restore the file"
        )
    return digest


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ANNDATA_KEYS = ("obs", "var", "X")


def h5ad_problem(path: Path) -> str | None:
    """Why `path` is not a readable AnnData file (no HDF5 signature, no obs/var/X), or None if it looks like one."""
    with open(path, "rb") as f:
        head = f.read(len(HDF5_SIGNATURE))
    # an HTML error or login page served with status 200 is the usual impostor; anndata writes no HDF5 user block,
    # so a real h5ad has the signature at byte 0
    if head != HDF5_SIGNATURE:
        return f"not an h5ad file: no HDF5 signature (starts with {head!r})"
    try:
        with h5py.File(path, "r") as h5:
            missing = [key for key in ANNDATA_KEYS if key not in h5]
    except OSError as e:
        return f"not an h5ad file: HDF5 file does not open ({e})"
    return f"not an h5ad file: HDF5 file without {', '.join(missing)}" if missing else None
