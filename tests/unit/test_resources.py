"""pertcal.resources: external files fetched from a 127.0.0.1 server (truncation + resume, HTTP 500, wrong checksum),
pinned on first download in the lock file, and refused early when absent with no URL."""

import hashlib

import pytest
import yaml

from pertcal.download import DownloadError
from pertcal.resources import fetch_resource, landing_path, missing_without_url, read_lock
from scripted_server import BODY

SHA = hashlib.sha256(BODY).hexdigest()
FAST = {"backoff": 0.001, "timeout": 5.0}


def test_published_checksum_is_verified_and_the_lock_is_left_alone(server, tmp_path):
    dest, lock = tmp_path / "ext" / "model.bin", tmp_path / "resources.lock.yaml"
    assert fetch_resource("m/model.bin", [server.url("/m")], dest, sha256=SHA, lock=lock, **FAST) == SHA
    assert dest.read_bytes() == BODY
    assert not lock.exists()


def test_truncated_download_is_resumed_then_pinned_on_first_use(server, tmp_path):
    server.queue("/m", "truncate", "ok")
    dest, lock = tmp_path / "model.bin", tmp_path / "resources.lock.yaml"
    assert fetch_resource("model.bin", [server.url("/m")], dest, lock=lock, **FAST) == SHA
    assert server.requests == [("/m", None), ("/m", f"bytes={len(BODY) // 2}-")]
    assert dest.read_bytes() == BODY
    # the digest an independent hash of the served bytes gives, under the resource's name
    assert read_lock(lock) == {"model.bin": SHA}
    assert lock.read_text().startswith("# sha256 of external resources")


def test_server_error_is_retried(server, tmp_path):
    server.queue("/m", 500)
    dest = tmp_path / "model.bin"
    fetch_resource("model.bin", [server.url("/m")], dest, sha256=SHA, lock=tmp_path / "lock.yaml", **FAST)
    assert dest.read_bytes() == BODY and len(server.requests) == 2


def test_wrong_published_checksum_fails_naming_resource_url_and_fix(server, tmp_path):
    dest, lock = tmp_path / "model.bin", tmp_path / "lock.yaml"
    url = server.url("/m")
    with pytest.raises(DownloadError) as err:
        fetch_resource("esm2/model.bin", [url], dest, sha256="0" * 64, lock=lock, **FAST)
    msg = str(err.value)
    assert "resource 'esm2/model.bin'" in msg and url in msg and "sha256 mismatch" in msg and "config.yaml" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert len(server.requests) == 1


def test_bytes_that_changed_since_the_first_download_are_refused(server, tmp_path):
    dest, lock = tmp_path / "model.bin", tmp_path / "lock.yaml"
    fetch_resource("model.bin", [server.url("/m")], dest, lock=lock, **FAST)
    dest.unlink()
    server.body = BODY[::-1]  # upstream now serves other bytes under the same URL
    with pytest.raises(DownloadError, match="sha256 mismatch") as err:
        fetch_resource("model.bin", [server.url("/m")], dest, lock=lock, **FAST)
    assert str(lock) in str(err.value) and "delete its entry" in str(err.value)
    assert not dest.exists()
    assert read_lock(lock) == {"model.bin": SHA}


def test_an_html_page_served_as_the_file_is_refused_and_never_pinned(server, tmp_path):
    server.body = b"\n  <!DOCTYPE html><html><body>Sign in to continue</body></html>"
    dest, lock = tmp_path / "best_model.pt", tmp_path / "lock.yaml"
    with pytest.raises(DownloadError, match="HTML page"):
        fetch_resource("scgpt/best_model.pt", [server.url("/m")], dest, lock=lock, **FAST)
    assert not dest.exists() and not lock.exists()


def test_lock_keeps_every_pin_and_other_names_are_pinned_independently(server, tmp_path):
    lock = tmp_path / "lock.yaml"
    lock.write_text(yaml.safe_dump({"other.gmt": "a" * 64}))
    fetch_resource("b.bin", [server.url("/b")], tmp_path / "b.bin", lock=lock, **FAST)
    assert read_lock(lock) == {"other.gmt": "a" * 64, "b.bin": SHA}


def test_missing_resource_without_url_is_named_with_its_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resources = {
        "gears/gene2go_all.pkl": {"licence": "MIT", "description": "GO map"},
        "with_url.bin": {"url": ["http://127.0.0.1:9/x"], "licence": "MIT"},
        "placed.bin": {"licence": "MIT"},
    }
    (tmp_path / landing_path("placed.bin")).parent.mkdir(parents=True)
    (tmp_path / landing_path("placed.bin")).touch()
    msgs = missing_without_url(resources, ["gears/gene2go_all.pkl", "with_url.bin", "placed.bin", "unknown.bin"])
    assert len(msgs) == 2
    assert "'gears/gene2go_all.pkl'" in msgs[0] and "resources/external/gears/gene2go_all.pkl" in msgs[0]
    assert "'unknown.bin'" in msgs[1] and "not listed" in msgs[1]
