"""The on-disk embedding cache: hits skip the model, keys change with everything that shapes a result."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fetoolkit.cache import EmbeddingCache, content_digest
from fetoolkit.data.sources import IdentityDataset
from fetoolkit.models.factory import create_embedder
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


def test_keys_move_with_threads_and_isa(monkeypatch: pytest.MonkeyPatch) -> None:
    """A crop or embedding computed with other threads or another ISA is never read back as this one's:
    MTCNN's crops differ by a grey level between torch thread counts (21 of 400 ORL crops)."""
    import torch

    from fetoolkit.detect.base import DetectorCfg
    from fetoolkit.pipeline import PipelineCfg, crops_key, detector_settings

    det = detector_settings(DetectorCfg())
    before = torch.get_num_threads()

    def key() -> str:
        return crops_key("c" * 64, PipelineCfg(), det, (112, 112), aligned=False)

    monkeypatch.delenv("FETOOLKIT_CPUID_MASK", raising=False)  # start from the hardware's flags
    try:
        torch.set_num_threads(1)
        one = key()
        assert key() == one  # deterministic for the same settings
        torch.set_num_threads(2)
        assert key() != one
        torch.set_num_threads(1)
        monkeypatch.setenv("FETOOLKIT_CPUID_MASK", "avx2")  # the kernels an AVX2-only CPU runs
        if "avx512f" in open("/proc/cpuinfo").read():
            assert key() != one
        monkeypatch.delenv("FETOOLKIT_CPUID_MASK")
        assert key() == one
        # Aligned inputs run no detector: threads do not enter their key.
        aligned = crops_key("c" * 64, PipelineCfg(), det, (112, 112), aligned=True)
        torch.set_num_threads(2)
        assert crops_key("c" * 64, PipelineCfg(), det, (112, 112), aligned=True) == aligned
    finally:
        torch.set_num_threads(before)


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
    assert sum("does not match its key or checksum" in r.getMessage() for r in caplog.records) == 2


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
