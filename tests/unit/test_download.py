"""pertcal.download.fetch against a real local HTTP server whose answers each test scripts."""

import hashlib

import anndata as ad
import h5py
import numpy as np
import pytest

from pertcal.download import DownloadError, fetch, h5ad_problem, verify_sha256
from pertcal.io import PertcalInputError

from scripted_server import BODY

SHA = hashlib.sha256(BODY).hexdigest()
FAST = {"backoff": 0.001, "timeout": 5.0}


def _leftovers(dest):
    return sorted(p.name for p in dest.parent.iterdir())


def test_plain_download_is_verified_and_moved_into_place(server, tmp_path):
    dest = tmp_path / "raw.h5ad"
    assert fetch([server.url("/f")], dest, sha256=SHA, size=len(BODY), dataset="ds", **FAST) == dest
    assert dest.read_bytes() == BODY
    assert _leftovers(dest) == ["raw.h5ad"]
    assert server.requests == [("/f", None)]


def test_truncated_body_is_resumed_with_range(server, tmp_path):
    server.queue("/f", "truncate", "ok")
    dest = tmp_path / "raw.h5ad"
    fetch([server.url("/f")], dest, sha256=SHA, dataset="ds", **FAST)
    assert dest.read_bytes() == BODY
    assert server.requests == [("/f", None), ("/f", f"bytes={len(BODY) // 2}-")]
    assert _leftovers(dest) == ["raw.h5ad"]


def test_server_error_is_retried(server, tmp_path):
    server.queue("/f", 500)
    dest = tmp_path / "raw.h5ad"
    fetch([server.url("/f")], dest, sha256=SHA, dataset="ds", **FAST)
    assert dest.read_bytes() == BODY
    assert len(server.requests) == 2


def test_wrong_checksum_raises_and_leaves_nothing(server, tmp_path):
    dest = tmp_path / "raw.h5ad"
    url = server.url("/f")
    with pytest.raises(DownloadError) as err:
        fetch([url], dest, sha256="0" * 64, dataset="norman19", **FAST)
    assert isinstance(err.value, PertcalInputError)
    assert "norman19" in str(err.value) and url in str(err.value) and "sha256 mismatch" in str(err.value)
    assert _leftovers(dest) == []
    assert len(server.requests) == 1  # the same server will serve the same bytes again


def test_wrong_size_raises(server, tmp_path):
    dest = tmp_path / "raw.h5ad"
    with pytest.raises(DownloadError, match="size mismatch"):
        fetch([server.url("/f")], dest, size=len(BODY) + 1, dataset="ds", **FAST)
    assert _leftovers(dest) == []


def test_not_found_fails_fast(server, tmp_path):
    server.queue("/f", 404)
    dest = tmp_path / "raw.h5ad"
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch([server.url("/f")], dest, retries=4, dataset="ds", backoff=10.0, timeout=5.0)
    assert len(server.requests) == 1
    assert _leftovers(dest) == []


def test_rate_limit_is_retried_until_retries_run_out(server, tmp_path):
    server.queue("/f", 429, 429, 429)
    dest = tmp_path / "raw.h5ad"
    with pytest.raises(DownloadError, match="HTTP 429"):
        fetch([server.url("/f")], dest, retries=2, dataset="ds", **FAST)
    assert len(server.requests) == 3
    assert _leftovers(dest) == []


def test_file_url(tmp_path):
    src = tmp_path / "source dir" / "raw.h5ad"
    src.parent.mkdir()
    src.write_bytes(BODY)
    dest = tmp_path / "out" / "raw.h5ad"
    fetch([src.as_uri()], dest, sha256=SHA, size=len(BODY), dataset="ds", **FAST)
    assert dest.read_bytes() == BODY


def test_missing_file_url_fails_fast(tmp_path):
    missing = (tmp_path / "absent.h5ad").as_uri()
    with pytest.raises(DownloadError, match="absent.h5ad"):
        fetch([missing], tmp_path / "raw.h5ad", dataset="ds", backoff=10.0, timeout=5.0)


def test_mirror_list_falls_through_to_second_url(server, tmp_path):
    server.queue("/a", 503, 503)
    dest = tmp_path / "raw.h5ad"
    fetch([server.url("/a"), server.url("/b")], dest, sha256=SHA, retries=1, dataset="ds", **FAST)
    assert dest.read_bytes() == BODY
    assert [path for path, _ in server.requests] == ["/a", "/a", "/b"]


def test_error_names_every_url_tried(server, tmp_path):
    server.queue("/a", 404)
    server.queue("/b", 500, 500)
    urls = [server.url("/a"), server.url("/b"), "ftp://example.invalid/raw.h5ad"]
    with pytest.raises(DownloadError) as err:
        fetch(urls, tmp_path / "raw.h5ad", retries=1, dataset="replogle22rpe1", **FAST)
    message = str(err.value)
    assert "replogle22rpe1" in message
    assert all(url in message for url in urls)
    assert "HTTP 404" in message and "HTTP 500" in message and "unsupported URL scheme" in message
    assert _leftovers(tmp_path / "raw.h5ad") == []


def test_existing_part_file_is_resumed(server, tmp_path):
    dest = tmp_path / "raw.h5ad"
    (tmp_path / "raw.h5ad.part").write_bytes(BODY[:1000])
    fetch([server.url("/f")], dest, sha256=SHA, dataset="ds", **FAST)
    assert dest.read_bytes() == BODY
    assert server.requests == [("/f", "bytes=1000-")]


def test_range_ignored_by_server_restarts_from_zero(server, tmp_path):
    server.queue("/f", "ignore_range")
    dest = tmp_path / "raw.h5ad"
    (tmp_path / "raw.h5ad.part").write_bytes(b"x" * 1000)
    fetch([server.url("/f")], dest, sha256=SHA, dataset="ds", **FAST)
    assert dest.read_bytes() == BODY
    assert server.requests == [("/f", "bytes=1000-")]


def test_stale_part_failing_checksum_is_refetched_from_zero(server, tmp_path):
    dest = tmp_path / "raw.h5ad"
    (tmp_path / "raw.h5ad.part").write_bytes(b"x" * 1000)
    fetch([server.url("/f")], dest, sha256=SHA, dataset="ds", **FAST)
    assert dest.read_bytes() == BODY
    assert server.requests == [("/f", "bytes=1000-"), ("/f", None)]


def test_complete_part_file_is_only_verified(server, tmp_path):
    dest = tmp_path / "raw.h5ad"
    (tmp_path / "raw.h5ad.part").write_bytes(BODY)
    fetch([server.url("/f")], dest, sha256=SHA, dataset="ds", **FAST)
    assert dest.read_bytes() == BODY
    assert server.requests == [("/f", f"bytes={len(BODY)}-")]


def _h5ad_bytes(tmp_path) -> bytes:
    path = tmp_path / "small.h5ad"
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(path)
    return path.read_bytes()


def test_h5ad_body_without_checksum_is_accepted(server, tmp_path):
    server.body = _h5ad_bytes(tmp_path)
    dest = tmp_path / "out" / "raw.h5ad"
    fetch([server.url("/f")], dest, dataset="ds", check=h5ad_problem, **FAST)
    assert ad.read_h5ad(dest).shape == (3, 2)


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"<!DOCTYPE html><html>Sign in to continue</html>", "no HDF5 signature"),
        ("hdf5 without anndata groups", "HDF5 file without obs, var, X"),
    ],
)
def test_body_that_is_not_an_h5ad_is_refused_once_and_not_kept(server, tmp_path, body, reason):
    if not isinstance(body, bytes):
        with h5py.File(tmp_path / "plain.h5", "w") as h5:
            h5["data"] = [1, 2, 3]
        body = (tmp_path / "plain.h5").read_bytes()
    server.body = body
    dest = tmp_path / "out" / "raw.h5ad"
    with pytest.raises(DownloadError) as err:
        fetch([server.url("/f")], dest, dataset="norman19", check=h5ad_problem, **FAST)
    message = str(err.value)
    assert "norman19" in message and server.url("/f") in message and reason in message and "config.yaml" in message
    assert _leftovers(dest) == []
    assert len(server.requests) == 1  # the same server would serve the same page again


def test_local_file_checksum_is_verified(tmp_path):
    path = tmp_path / "mine.h5ad"
    path.write_bytes(BODY)
    assert verify_sha256(path, SHA.upper(), dataset="mine") == SHA
    with pytest.raises(PertcalInputError) as err:
        verify_sha256(path, "0" * 64, dataset="mine")
    message = str(err.value)
    assert f"dataset 'mine', file {path}" in message and "source.sha256" in message
    assert f"expected {'0' * 64}, got {SHA}" in message
