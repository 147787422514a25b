"""The layered Python API: detect -> align -> create_embedder().embed."""

from __future__ import annotations

import numpy as np
import pytest

import fetoolkit
from fetoolkit.data.wild import load_wild
from fetoolkit.imageio import read_image


@pytest.fixture(scope="module")
def arcface() -> fetoolkit.Embedder:
    return fetoolkit.create_embedder("arcface")


def test_embed_contract(arcface: fetoolkit.Embedder, aligned_faces: np.ndarray) -> None:
    emb = arcface.embed(aligned_faces[:5])
    assert emb.shape == (5, 192) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert arcface.contract.size == (112, 112) and arcface.contract.color == "RGB"
    # Batching does not change an embedding.
    one = arcface.embed(aligned_faces[:1])
    np.testing.assert_allclose(one[0], emb[0], atol=1e-5)


def test_embed_rejects_wrong_input(arcface: fetoolkit.Embedder) -> None:
    with pytest.raises(ValueError, match="uint8"):
        arcface.embed(np.zeros((1, 112, 112, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        arcface.embed(np.zeros((1, 96, 112, 3), np.uint8))


def test_same_person_scores_higher(
    arcface: fetoolkit.Embedder, aligned_faces: np.ndarray, aligned_identities: np.ndarray
) -> None:
    emb = arcface.embed(aligned_faces)
    sim = emb @ emb.T
    same = aligned_identities[:, None] == aligned_identities[None, :]
    off_diag = ~np.eye(len(emb), dtype=bool)
    genuine, impostor = sim[same & off_diag], sim[~same]
    assert genuine.mean() - impostor.mean() > 0.3
    assert np.median(genuine) > np.percentile(impostor, 99)


def test_wild_photos_detect_align_embed(arcface: fetoolkit.Embedder) -> None:
    photos = load_wild()
    embs = {}
    for name, path in photos.items():
        image = read_image(path)
        dets = fetoolkit.detect(image)
        assert dets, f"no face in {name}"
        assert dets[0].landmarks.shape == (5, 2) and dets[0].landmarks.dtype == np.float32
        le, re = dets[0].landmarks[0], dets[0].landmarks[1]
        assert le[0] < re[0], "left eye (image left) comes first"
        embs[name] = arcface.embed(fetoolkit.align(image, dets[0].landmarks)[None])[0]
    obama = [
        embs["obama.jpg"] @ embs["obama2.jpg"],
        embs["obama.jpg"] @ embs["obama3.jpg"],
        embs["obama2.jpg"] @ embs["obama3.jpg"],
    ]
    cross = [embs[o] @ embs["biden.jpg"] for o in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
    assert min(obama) > max(cross), (obama, cross)


def test_unknown_model_lists_known() -> None:
    with pytest.raises(KeyError, match="arcface"):
        fetoolkit.create_embedder("no_such_model")
