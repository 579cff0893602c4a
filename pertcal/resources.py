"""External files the workflow fetches (GEARS's GO map, model checkpoints, protein sequences, gene-set libraries):
downloaded by pertcal.download.fetch, pinned by a published sha256 or, failing that, by the lock file's sha256 of the
first download (trust on first use), and refused early when absent with nowhere to fetch them from."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

import yaml

from pertcal.download import fetch, file_sha256
from pertcal.io import PertcalInputError

log = logging.getLogger(__name__)

# Where a resource lands: its config key is its path below this directory.
LANDING_DIR = "resources/external"
LOCK_HEADER = (
    "# sha256 of external resources that publish no checksum, recorded at their first download (trust on first use)\n"
    "# by rule fetch_resource and verified on every later download. Commit this file to pin the bytes for every user;\n"
    "# delete an entry to accept a new upstream version of that file.\n"
)


def landing_path(name: str) -> str:
    """Where resource `name` (its config key, a relative path) lands."""
    return f"{LANDING_DIR}/{name}"


def html_problem(path: Path) -> str | None:
    """Why `path` looks like an HTML page (a login, consent or error page served with status 200), or None.

    Checked before a digest is pinned on first use, so such a page is never trusted as the resource.
    """
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return f"an HTML page, not the resource (starts with {head[:40]!r})" if head.startswith((b"<!doctype html", b"<html")) else None


def read_lock(path: str | os.PathLike) -> dict[str, str]:
    """The lock file's {resource name: sha256}; {} when it does not exist yet."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    pins = yaml.safe_load(text) or {}
    if not isinstance(pins, dict):
        raise PertcalInputError(f"lock file {path}: expected a mapping of resource name to sha256, got {text[:80]!r}")
    return {str(k): str(v) for k, v in pins.items()}


def _record(lock: Path, name: str, digest: str) -> str:
    """Record `digest` for `name` in the lock file unless another job pinned it first; return the pinned digest.

    Fetch jobs may run side by side: the read-modify-write happens under an exclusive lock of the file.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        pins = {str(k): str(v) for k, v in (yaml.safe_load(fh.read()) or {}).items()}
        if name in pins:
            return pins[name]
        pins[name] = digest
        fh.seek(0)
        fh.truncate()
        fh.write(LOCK_HEADER + yaml.safe_dump(dict(sorted(pins.items())), sort_keys=False))
        fh.flush()
        os.fsync(fh.fileno())
    log.info("resource %r: no published sha256; recorded %s in %s (trust on first use)", name, digest, lock)
    return digest


def fetch_resource(
    name: str,
    urls: list[str],
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    lock: str | os.PathLike,
    **fetch_options,
) -> str:
    """Download resource `name` from `urls` to `dest` and return its sha256.

    Verified against `sha256` (published, from config) or else the lock file's pin; with neither, the first
    download's digest is recorded in `lock`. `fetch_options` go to pertcal.download.fetch (retries, timeout, ...).
    """
    lock = Path(lock)
    pinned = sha256 or read_lock(lock).get(name)
    source = "config.yaml" if sha256 else f"the lock file {lock}"
    fix = (
        f"If upstream changed the file on purpose, check it and delete its entry from {lock} (or update its sha256 in "
        "config.yaml); a site with a copy can give it as url: [file:///path/to/copy], or put the file at "
        f"{dest} itself."
        if pinned
        else f"Fix its url in config.yaml 'resources', or put the file at {dest} yourself."
    )
    what = f"resource {name!r}" + (f" (sha256 from {source})" if pinned else "")
    check = None if name.lower().endswith((".html", ".htm")) else html_problem
    fetch(urls, dest, sha256=pinned, size=size, what=what, fix=fix, check=check, **fetch_options)
    if pinned:
        return pinned.lower()
    digest = file_sha256(dest)
    recorded = _record(lock, name, digest)
    if recorded != digest:  # another job pinned other bytes in the meantime
        Path(dest).unlink()
        raise PertcalInputError(
            f"resource {name!r}: downloaded sha256 {digest} but {lock} pins {recorded}; the source served different "
            "bytes to two downloads: check it, then delete the entry to pin one"
        )
    return digest


def missing_without_url(resources: dict[str, dict], names, exists=os.path.exists) -> list[str]:
    """One message per resource of `names` whose file is absent and whose config entry gives no URL to fetch it."""
    out = []
    for name in names:
        if name not in resources:
            out.append(f"resource {name!r} is used but not listed under 'resources' in config.yaml")
        elif not resources[name].get("url") and not exists(landing_path(name)):
            spec = resources[name]
            what = f" ({spec['description']})" if spec.get("description") else ""
            out.append(
                f"resource {name!r}{what} has no url in config.yaml and is not at {landing_path(name)}: put the file "
                f"there (licence: {spec.get('licence', 'see its source')}), or give its url"
            )
    return out
