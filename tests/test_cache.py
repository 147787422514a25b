"""The on-disk embedding cache: hits skip the model, keys change with everything that shapes a result."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fetoolkit.cache import EmbeddingCache, content_digest
from fetoolkit.data.sources import IdentityDataset
from fetoolkit.models.factory import create_embedder
from fetoolkit.models.registry import get_model_spec
from fetoolkit.pipeline import PipelineCfg, crops_key, embed_dataset, embeddings_key
from fetoolkit.types import InputContract

DET = {"min_face_size": 20, "thresholds": [0.6, 0.7, 0.7], "factor": 0.709}


class CountingEmbedder:
    """The real arcface embedder, counting the faces it embeds."""

    def __init__(self) -> None:
        self.inner = create_embedder("arcface")
        self.name, self.backend, self.contract = self.inner.name, self.inner.backend, self.inner.contract
        self.weights_sha256 = self.inner.weights_sha256
        self.faces = 0

    def embed_raw(self, faces: np.ndarray) -> np.ndarray:
        self.faces += len(faces)
        return self.inner.embed_raw(faces)

    def embed(self, faces: np.ndarray) -> np.ndarray:
        self.faces += len(faces)
        return self.inner.embed(faces)


@pytest.fixture(scope="module")
def embedder() -> CountingEmbedder:
    return CountingEmbedder()


@pytest.fixture()
def images(orl: IdentityDataset, tmp_path: Path) -> list[Path]:
    """12 ORL photos copied into a fresh folder, plus one file that is not an image."""
    out = []
    for p in orl.paths[:12]:
        q = tmp_path / "img" / p.parent.name / p.name
        q.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, q)
        out.append(q)
    bad = tmp_path / "img" / "broken.jpg"
    bad.write_bytes(b"not an image")
    return out + [bad]


def _run(paths, embedder, cache, cfg=None, **kw):
    return embed_dataset(
        paths,
        embedder,
        cfg or PipelineCfg(progress=False),
        detector_settings=DET,
        cache=cache,
        detector=_detector,
        **kw,
    )


def _detector():
    from fetoolkit.detect.mtcnn import default_detector

    return default_detector()


def test_second_run_is_served_from_cache(
    images: list[Path], embedder: CountingEmbedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    before = embedder.faces
    first = _run(images, embedder, cache, flip=True)
    assert (first.cache, first.crops_cache) == ("miss", "miss")
    assert embedder.faces - before == 2 * 12  # the broken file never reaches the model; flip doubles
    assert first.ok.tolist() == [True] * 12 + [False] and "broken.jpg" in first.failures[12]
    with caplog.at_level(logging.INFO, logger="fetoolkit.pipeline"):
        second = _run(images, embedder, cache, flip=True)
    assert second.cache == "hit" and embedder.faces - before == 24  # no new forward pass
    assert "embedding cache hit" in caplog.text
    np.testing.assert_array_equal(second.raw, first.raw)
    np.testing.assert_array_equal(second.raw_flip, first.raw_flip)
    np.testing.assert_array_equal(second.ok, first.ok)
    assert second.failures == first.failures
    assert not list((tmp_path / "cache").rglob("*.part"))  # atomic writes leave no temporaries
    # Same images at another path: same content, same key, messages name the new path.
    moved = tmp_path / "moved"
    shutil.copytree(images[0].parents[1], moved)
    paths2 = [moved / p.relative_to(images[0].parents[1]) for p in images]
    third = _run(paths2, embedder, cache, flip=True)
    assert third.cache == "hit" and str(paths2[12]) in third.failures[12]


def test_settings_that_change_results_change_the_key(
    images: list[Path], embedder: CountingEmbedder, tmp_path: Path
) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    base = _run(images, embedder, cache)
    n = embedder.faces
    swapped = _run(images, embedder, cache, cfg=PipelineCfg(progress=False, swap_rb=True))
    assert (swapped.cache, swapped.crops_cache) == ("miss", "hit")  # same crops, new embeddings
    assert embedder.faces - n == 12  # (ORL is grey, so the swapped embeddings happen to be equal)
    largest = _run(images, embedder, cache, cfg=PipelineCfg(progress=False, select="largest"))
    assert (largest.cache, largest.crops_cache) == ("miss", "miss")
    # Change one image's content: the key changes.
    images[0].write_bytes(images[1].read_bytes())
    changed = _run(images, embedder, cache)
    assert changed.cache == "miss"
    np.testing.assert_array_equal(changed.raw[0], base.raw[1])


def test_key_ingredients() -> None:
    """Every ingredient named in the design moves the key: weights, backend, contract, pipeline, detector, content."""

    class Fake:
        name, backend, weights_sha256 = "m", "torch", "a" * 64
        contract = InputContract(embed_dim=192)

    cfg = PipelineCfg()
    ck = crops_key("c" * 64, cfg, DET, (112, 112), False)
    variants = [
        crops_key("d" * 64, cfg, DET, (112, 112), False),
        crops_key("c" * 64, replace(cfg, select="center"), DET, (112, 112), False),
        crops_key("c" * 64, replace(cfg, align=False), DET, (112, 112), False),
        crops_key("c" * 64, cfg, {**DET, "min_face_size": 40}, (112, 112), False),
        crops_key("c" * 64, cfg, {**DET, "thresholds": [0.6, 0.7, 0.8]}, (112, 112), False),
        crops_key("c" * 64, cfg, DET, (112, 96), False),
        crops_key("c" * 64, cfg, DET, (112, 112), True),
    ]
    assert len({ck, *variants}) == len(variants) + 1
    # Aligned input never runs the detector: detector settings must not split the cache.
    assert crops_key("c" * 64, cfg, DET, (112, 112), True) == crops_key("c" * 64, cfg, {}, (112, 112), True)
    e = Fake()
    ek = embeddings_key(ck, e, cfg, False)
    others = [
        embeddings_key(ck, e, replace(cfg, swap_rb=True), False),
        embeddings_key(ck, e, cfg, True),
        embeddings_key(ck, e, replace(cfg, degrade=0.25), False),
        embeddings_key(variants[0], e, cfg, False),
    ]
    for attr, value in (
        ("backend", "onnx"),
        ("weights_sha256", "b" * 64),
        ("name", "m2"),
        ("contract", InputContract(embed_dim=192, std=(128.0,) * 3)),
    ):
        f = Fake()
        setattr(f, attr, value)
        others.append(embeddings_key(ck, f, cfg, False))
    assert len({ek, *others}) == len(others) + 1
    # Settings that do not change results do not split the cache.
    assert embeddings_key(ck, e, replace(cfg, batch_size=7, progress=False), False) == ek


def test_unreadable_entry_is_recomputed(
    images: list[Path], embedder: CountingEmbedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    first = _run(images, embedder, cache)
    entry = cache.path("emb", first.key)
    entry.write_bytes(entry.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="fetoolkit.cache"):
        again = _run(images, embedder, cache)
    assert again.cache == "miss" and "unreadable" in caplog.text
    np.testing.assert_array_equal(again.raw, first.raw)
    assert _run(images, embedder, cache).cache == "hit"


def test_content_digest() -> None:
    assert content_digest([], [b"a", b"b"]) != content_digest([], [b"b", b"a"])
    assert content_digest([Path("/no/such/file")]) == content_digest([Path("/no/such/other")])


def test_keys_move_with_the_isa_and_onnxruntime_threads_not_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A crop or embedding computed on another ISA, or an onnxruntime embedding computed with other
    intra-op threads, is never read back as this one's. Crops are detected, and torch embeddings
    computed, at one intra-op thread per image / batch whatever the job's threads
    (``test_crops_do_not_depend_on_the_jobs_threads``, ``test_torch_embeddings_do_not_depend_on_the_jobs_threads``),
    so torch's thread count is in neither key."""
    import torch

    from fetoolkit.detect.base import DetectorCfg
    from fetoolkit.pipeline import PipelineCfg, crops_key, detector_settings

    det = detector_settings(DetectorCfg())
    before = torch.get_num_threads()
    contract = get_model_spec("arcface").contract

    class Model:
        def __init__(self, backend: str, num_threads: int | None = None) -> None:
            self.name, self.backend, self.contract, self.num_threads = "m", backend, contract, num_threads

    def key() -> str:
        return crops_key("c" * 64, PipelineCfg(), det, (112, 112), aligned=False)

    def ekey(m: Model) -> str:
        return embeddings_key("c", m, PipelineCfg(), False)

    monkeypatch.delenv("FETOOLKIT_CPUID_MASK", raising=False)  # start from the hardware's flags
    try:
        torch.set_num_threads(1)
        one, emb_one = key(), ekey(Model("torch"))
        assert key() == one  # deterministic for the same settings
        torch.set_num_threads(2)
        assert key() == one and ekey(Model("torch")) == emb_one
        assert ekey(Model("onnx", 1)) != ekey(Model("onnx", 2))
        torch.set_num_threads(1)
        monkeypatch.setenv("FETOOLKIT_CPUID_MASK", "avx2")  # the kernels an AVX2-only CPU runs
        if "avx512f" in open("/proc/cpuinfo").read():
            assert key() != one and ekey(Model("torch")) != emb_one
        monkeypatch.delenv("FETOOLKIT_CPUID_MASK")
        assert key() == one
    finally:
        torch.set_num_threads(before)


def test_torch_embeddings_do_not_depend_on_the_jobs_threads(aligned_faces: np.ndarray) -> None:
    """A torch model run with two intra-op threads moves an embedding's last bits; embed_crops runs
    every batch at one thread (several batches at once), so any thread count gives the same bits."""
    import torch

    from fetoolkit.pipeline import embed_crops

    e = create_embedder("arcface", backend="torch")
    cfg = PipelineCfg(progress=False, batch_size=16)
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (2, 1):
            torch.set_num_threads(threads)
            runs.append(embed_crops(aligned_faces[:96], e, cfg, raw=True))
            assert torch.get_num_threads() == threads  # restored after
    finally:
        torch.set_num_threads(before)
    assert np.isfinite(runs[0]).all() and np.array_equal(runs[0], runs[1])


def test_crops_do_not_depend_on_the_jobs_threads(orl: IdentityDataset) -> None:
    """MTCNN run with two torch threads moves some landmarks in their last bits (and some crops by a
    grey level); crop_images detects each image at one thread, so a job's thread count (and the
    images it detects at once) leaves every crop and landmark bit-identical."""
    import torch

    from fetoolkit.detect.mtcnn import MTCNNDetector
    from fetoolkit.pipeline import crop_images

    paths = list(orl.paths)[:60]
    det, cfg = MTCNNDetector(), PipelineCfg(progress=False)
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (2, 1):
            torch.set_num_threads(threads)
            runs.append(crop_images(paths, det, cfg))
            assert torch.get_num_threads() == threads  # restored after
    finally:
        torch.set_num_threads(before)
    assert runs[0].ok.all() and runs[1].ok.all()
    assert np.array_equal(runs[0].landmarks, runs[1].landmarks)
    assert np.array_equal(runs[0].faces, runs[1].faces)


def test_entries_carry_their_key_and_checksum(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = EmbeddingCache(tmp_path)
    arrays = {"raw": np.arange(12, dtype=np.float32).reshape(3, 4), "ok": np.array([True, False, True])}
    path = cache.save("emb", "k" * 64, arrays)
    got = cache.load("emb", "k" * 64)
    assert got is not None and set(got) == {"raw", "ok", "_version"}
    np.testing.assert_array_equal(got["raw"], arrays["raw"])
    # An entry copied under another key (a poisoned or misplaced file) is refused.
    other = cache.path("emb", "o" * 64)
    shutil.copy(path, other)
    assert cache.load("emb", "o" * 64) is None
    # Arrays rewritten inside a valid zip with the stored checksum kept are refused too.
    with np.load(path, allow_pickle=False) as z:
        entry = {k: z[k] for k in z.files}
    entry["raw"] = entry["raw"] + 1
    with open(path, "wb") as f:
        np.savez(f, **entry)
    assert cache.load("emb", "k" * 64) is None
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("holds another key" in m for m in msgs) == 1
    assert sum("does not match its checksum" in m for m in msgs) == 1


def test_an_unwritable_cache_warns_once_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import fetoolkit.cache as cache_mod

    def full_disk(*args: object, **kwargs: object):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_mod, "atomic_path", full_disk)
    cache = EmbeddingCache(tmp_path)
    assert cache.save("emb", "a" * 64, {"x": np.zeros(2)}) is None
    assert cache.save("emb", "b" * 64, {"x": np.zeros(2)}) is None
    warnings = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 1 and "No space left" in warnings[0].getMessage()


def _cache_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FETOOLKIT_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "fetoolkit.cache", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_cache_command_verifies_prunes_and_clears(tmp_path: Path) -> None:
    """``python -m fetoolkit.cache`` as a user runs it, on a cache holding one file of every
    case: good, damaged, outdated, orphaned, a killed writer's temporary file, a live one's."""
    from fetoolkit.hub import record_derived, sidecar_of

    home = tmp_path / "home"
    cache = EmbeddingCache(home / "embeddings")
    arrays = {"raw": np.arange(8, dtype=np.float32).reshape(2, 4)}
    good = cache.save("emb", "g" * 64, arrays)
    damaged = cache.save("crops", "d" * 64, arrays)
    with np.load(damaged, allow_pickle=False) as z:
        entry = {k: z[k] for k in z.files}
    entry["raw"] = entry["raw"] * 2  # the stored checksum kept
    with open(damaged, "wb") as f:
        np.savez(f, **entry)
    outdated = cache.path("emb", "o" * 64)
    with open(outdated, "wb") as f:
        np.savez(f, _version=np.int64(1), **arrays)
    onnx_dir = home / "onnx"
    onnx_dir.mkdir(parents=True)
    ok_file, bad_file = onnx_dir / "a.onnx", onnx_dir / "b.onnx"
    for p in (ok_file, bad_file):
        p.write_bytes(b"\x08\x07" * 500)
        record_derived(p, "0" * 64, "test")
    bad_file.write_bytes(b"\x08\x08" * 500)  # same size, other bytes
    young = onnx_dir / "c.onnx"  # just renamed into place by a writer that has not written its sidecar yet
    young.write_bytes(b"\x08\x09" * 500)
    for p in (ok_file, bad_file, sidecar_of(ok_file), sidecar_of(bad_file)):
        os.utime(p, (time.time() - 3600,) * 2)
    orphan = sidecar_of(onnx_dir / "gone.onnx")
    orphan.write_text(sidecar_of(ok_file).read_text())
    stale_part, live_part = onnx_dir / ".a.onnx.x1.part", onnx_dir / ".a.onnx.x2.part"
    for p in (stale_part, live_part):
        p.write_bytes(b"half")
    os.utime(stale_part, (time.time() - 2 * 86400,) * 2)
    weights = home / "weights" / "w.tflite"
    weights.parent.mkdir()
    weights.write_bytes(b"source")

    done = _cache_cli(home, "verify")
    assert done.returncode == 1, done.stderr
    damaged_lines = [line for line in done.stderr.splitlines() if line.startswith("DAMAGED")]
    assert len(damaged_lines) == 2 and str(damaged) in done.stderr and str(bad_file) in done.stderr
    assert "3 entries and 3 derived files" in done.stderr and "2 damaged, 4 outdated" in done.stderr

    done = _cache_cli(home, "prune")
    assert done.returncode == 0, done.stderr
    for p in (damaged, outdated, bad_file, sidecar_of(bad_file), orphan, stale_part):
        assert not p.exists(), p
    for p in (good, ok_file, sidecar_of(ok_file), live_part, weights, young):
        assert p.exists(), p
    assert cache.load("emb", "g" * 64) is not None
    young.unlink()
    assert _cache_cli(home, "verify").returncode == 0

    assert _cache_cli(home, "clear").returncode == 0
    assert not (home / "embeddings" / "emb").exists() and ok_file.exists()
    assert _cache_cli(home, "clear", "--derived").returncode == 0
    assert not onnx_dir.exists() and weights.exists()


WRITER = """
import sys
import numpy as np
from fetoolkit.cache import EmbeddingCache
cache = EmbeddingCache(sys.argv[1])
order = range(40) if sys.argv[2] == "up" else reversed(range(40))
bad = 0
for rep in range(3):
    for i in order if rep == 0 else range(40):
        arrays = {"raw": np.full((64, 128), i, np.float32), "ok": np.ones(64, bool)}
        cache.save("emb", f"{i:064d}", arrays)
        got = cache.load("emb", f"{(i * 7) % 40:064d}")
        bad += got is not None and float(got["raw"][0, 0]) != (i * 7) % 40
print(bad)
"""


def test_concurrent_writers_leave_a_consistent_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two processes writing and reading the same 40 entries at once: every read is whole and
    right (or a miss), and afterwards every entry verifies and holds its own value."""
    from fetoolkit.cache import read_entry

    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), d], stdout=subprocess.PIPE, text=True)
        for d in ("up", "down")
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outs == ["0", "0"]
    entries = sorted((tmp_path / "emb").glob("*.npz"))
    assert len(entries) == 40 and not list((tmp_path / "emb").glob(".*.part"))
    for path in entries:
        arrays, problem = read_entry(path, path.stem)
        assert problem is None and arrays is not None
        assert float(arrays["raw"][0, 0]) == int(path.stem)
