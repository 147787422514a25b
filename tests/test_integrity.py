"""Nothing silently wrong: a file that names another model is refused, whatever the backend.

Oracles: the metadata the export wrote (``fetoolkit.model``, ``fetoolkit.contract``) and the
registry record asked for; the eval job's exit status and message as a user sees them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fetoolkit.backends.onnx_backend import OnnxModelError
from fetoolkit.models.factory import create_embedder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mfn512_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our fp32 export of the real faceplugin MobileFaceNet (512-d), metadata and all."""
    from fetoolkit.models.variants import export_variant

    return export_variant("mobilefacenet512", weights=None, out=tmp_path_factory.mktemp("m") / "m512.onnx")


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_another_models_onnx_is_refused_naming_both(mfn512_onnx: Path, backend: str) -> None:
    with pytest.raises(OnnxModelError) as err:
        create_embedder("arcface", weights=mfn512_onnx, backend=backend)
    msg = str(err.value)
    assert "names model 'mobilefacenet512', not 'arcface_mbf.sirius'" in msg
    assert "embed_dim 512 (expected 192)" in msg and "model=mobilefacenet512" in msg
    assert str(mfn512_onnx) in msg


def test_allow_mismatch_runs_the_file_under_its_own_contract(mfn512_onnx: Path) -> None:
    emb = create_embedder("arcface", weights=mfn512_onnx, backend="onnx", allow_mismatch=True)
    assert emb.contract.embed_dim == 512
    # The right name passes without the flag.
    assert create_embedder("mobilefacenet512", weights=mfn512_onnx, backend="onnx").contract.embed_dim == 512


def test_eval_job_refuses_it(mfn512_onnx: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "fetoolkit.eval",
        "model=arcface",
        "backend=onnx",
        f"model.weights={mfn512_onnx}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "cache.enabled=false",
        "stats.n_boot=0",
    ]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "names model 'mobilefacenet512', not 'arcface_mbf.sirius'" in res.stderr
    assert not (tmp_path / "run" / "results.json").exists()


# ----------------------------------------------------------------------------------------
# A verified chain: a damaged conversion or export is rebuilt, never used
# ----------------------------------------------------------------------------------------


def _scramble_middle(path: Path, n: int = 4096) -> None:
    """Overwrite ``n`` bytes in the middle of ``path`` (inside the tensor data; size and header kept)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + n] = bytes((b ^ 0x5A) for b in data[mid : mid + n])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_scrambled_derived_file_is_rebuilt_not_used(
    backend: str,
    sirius_tflite: Path,
    aligned_faces,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The faults of the issue: one tensor of the converted safetensors (torch) or one initializer
    of the cached ONNX export (onnx) scrambled, header and size kept. The next run rebuilds the
    file from the verified TFLite, warns naming it, and embeds exactly as before the damage."""
    import numpy as np

    from fetoolkit.hub import sidecar_of

    monkeypatch.setenv("FETOOLKIT_HOME", str(tmp_path / "home"))
    first = create_embedder("arcface", weights=sirius_tflite, backend=backend)
    ref = first.embed(aligned_faces)
    sub = "converted" if backend == "torch" else "onnx"
    (derived,) = [p for p in (tmp_path / "home" / sub).iterdir() if not p.name.endswith(".sha256.json")]
    assert sidecar_of(derived).is_file()
    _scramble_middle(derived)
    again = create_embedder("arcface", weights=sirius_tflite, backend=backend)
    assert any(str(derived) in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    got = again.embed(aligned_faces)
    assert float(np.min(np.sum(got * ref, axis=1))) > 0.99999
    # the file that ran is the conversion/export (recorded beside the source's sha256), not the TFLite
    assert again.runtime_sha256 == first.runtime_sha256 and again.runtime_sha256 != again.weights_sha256


def test_the_embeddings_cache_key_names_the_file_that_ran(aligned_faces) -> None:
    from fetoolkit.pipeline import PipelineCfg, embeddings_key

    class E:
        name, backend = "m", "onnx"
        weights_sha256 = "a" * 64
        num_threads = None

        def __init__(self, runtime: str) -> None:
            self.runtime_sha256 = runtime
            from fetoolkit.types import InputContract

            self.contract = InputContract(embed_dim=8)

    k1 = embeddings_key("c", E("1" * 64), PipelineCfg(), flip=False)
    assert k1 == embeddings_key("c", E("1" * 64), PipelineCfg(), flip=False)
    assert k1 != embeddings_key("c", E("2" * 64), PipelineCfg(), flip=False)


# ----------------------------------------------------------------------------------------
# Nothing skipped silently: every format Pillow reads is read, the rest is listed
# ----------------------------------------------------------------------------------------


def test_folder_reads_every_pillow_format_and_lists_what_it_skips(orl, tmp_path: Path) -> None:
    from PIL import Image

    from fetoolkit.data.sources import load_identity_folder

    root = tmp_path / "faces"
    kinds = {"a": ("GIF", ".gif"), "b": ("JPEG", ".jfif"), "c": ("JPEG", ".jpe")}
    for k, (ident, (fmt, ext)) in enumerate(kinds.items()):
        (root / ident).mkdir(parents=True)
        for j in range(2):
            with Image.open(orl.paths[k * 10 + j]) as im:
                im.convert("L").save(root / ident / f"{j}{ext}", format=fmt)
    (root / "a" / "notes.txt").write_text("not a face")
    (root / "empty").mkdir()
    ds = load_identity_folder(root)
    assert ds.names == ["a", "b", "c"] and len(ds.paths) == 6
    assert sorted(p.suffix for p in ds.paths) == [".gif", ".gif", ".jfif", ".jfif", ".jpe", ".jpe"]
    reasons = {Path(d["path"]).name: d["reason"] for d in ds.skipped}
    assert set(reasons) == {"notes.txt", "empty"}
    assert ".txt" in reasons["notes.txt"] and "no image" in reasons["empty"]


def test_duplicates_and_single_image_identities_are_listed_or_refused(orl, tmp_path: Path) -> None:
    """The same ORL photo filed under two identities and twice in one, and an identity of one image:
    each listed with its reason (results.json data.hygiene), or refused with strict."""
    import shutil

    from fetoolkit.data import from_identities
    from fetoolkit.data.sources import load_identity_folder

    root = tmp_path / "faces"
    for ident in ("p1", "p2", "p3", "p4", "solo"):
        (root / ident).mkdir(parents=True)
    for j in range(3):
        for k, ident in enumerate(("p1", "p2", "p3", "p4")):
            shutil.copy(orl.paths[k * 10 + j], root / ident / f"{j}.pgm")
    shutil.copy(orl.paths[0], root / "p2" / "9.pgm")  # p1's photo under p2
    shutil.copy(orl.paths[10], root / "p2" / "8.pgm")  # p2's photo twice in p2
    shutil.copy(orl.paths[50], root / "solo" / "0.pgm")
    ds = load_identity_folder(root)
    data = from_identities(ds, n_folds=2, seed=0, roc_pairs="all")
    h = data.meta["hygiene"]
    dup = {Path(d["path"]).name: d["reason"] for d in h["duplicates"]}
    assert set(dup) == {"9.pgm", "8.pgm"}
    assert "identities p1 and p2" in dup["9.pgm"] and "impostor pair of one photo" in dup["9.pgm"]
    assert "identity p2" in dup["8.pgm"] and "genuine pair of one photo" in dup["8.pgm"]
    assert [Path(d["path"]).parent.name for d in h["single_image_identities"]] == ["solo"]
    with pytest.raises(ValueError, match="dataset.strict=true: 2 duplicate images"):
        from_identities(ds, n_folds=2, seed=0, roc_pairs="all", strict=True)
    clean = from_identities(load_identity_folder(root, pattern="[0-2].pgm"), n_folds=2, seed=0, roc_pairs="all")
    assert clean.meta["hygiene"]["duplicates"] == []


def test_pairs_of_one_photo_are_listed_or_refused_in_pair_lists(orl, tmp_path: Path) -> None:
    """CSV pairs whose two sides are the same photo (one path twice; two copies of one file) are
    listed in data.hygiene.same_photo_pairs with what they mean, or refused with strict."""
    import shutil

    from fetoolkit.data import load_eval_data

    shutil.copy(orl.paths[0], tmp_path / "copy.pgm")
    rows = [
        f"{orl.paths[0]},{orl.paths[0]},1",  # one path twice: a genuine pair of one photo
        f"{orl.paths[0]},{tmp_path / 'copy.pgm'},0",  # two copies labelled as two people
        f"{orl.paths[0]},{orl.paths[1]},1",
        f"{orl.paths[0]},{orl.paths[10]},0",
    ]
    (tmp_path / "pairs.csv").write_text("path1,path2,label\n" + "\n".join(rows * 3) + "\n")
    cfg = OmegaConf.create({"name": "csv", "path": str(tmp_path / "pairs.csv"), "n_folds": 2, "strict": False})
    data = load_eval_data(cfg)  # each row is listed 3 times: counted once (dataset.duplicate_pairs=once)
    assert data.meta["duplicate_pairs"]["n_extra"] == 8 and len(data.meta["hygiene"]["same_photo_pairs"]) == 2
    cfg.duplicate_pairs = "keep"
    same = load_eval_data(cfg).meta["hygiene"]["same_photo_pairs"]
    assert len(same) == 6
    assert sum("genuine pair of one photo" in d["reason"] for d in same) == 3
    assert sum("impostor pair of one photo" in d["reason"] and "copy.pgm" in d["path"] for d in same) == 3
    cfg.strict = True
    with pytest.raises(ValueError, match="dataset.strict=true: 6 duplicate images or same-photo pairs"):
        load_eval_data(cfg)


# ----------------------------------------------------------------------------------------
# Damaged weight files: one line naming the file and what to do, never a raw library error
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("truncated.tflite", "first 1000 bytes of the real file", "not a readable TFLite file"),
        ("empty.onnx", b"", "holds no ONNX graph (0 bytes)"),
        ("junk.safetensors", b"\x00" * 64, "not a readable safetensors file"),
        ("model.h5", b"HDF", "expected .tflite, .onnx"),
    ],
)
def test_damaged_weights_name_the_file(sirius_tflite: Path, tmp_path: Path, name: str, content, says: str) -> None:
    path = tmp_path / name
    path.write_bytes(sirius_tflite.read_bytes()[:1000] if isinstance(content, str) else content)
    with pytest.raises(ValueError) as err:
        create_embedder("arcface", weights=path, backend="torch")
    assert says in str(err.value) and str(path) in str(err.value), str(err.value)


def test_a_damaged_export_job_output_is_refused_with_its_command(mfn512_onnx: Path, tmp_path: Path) -> None:
    """An export's own file (not in the cache, so not rebuildable without the user's settings)
    carries a sidecar; scrambled with its size kept, it is refused naming the file and the
    command that made it, under both backends; the intact copy runs."""
    import shutil

    from fetoolkit.hub import DerivedFileError, sidecar_of

    side = sidecar_of(mfn512_onnx)
    assert side.is_file() and '"made_by": "python -m fetoolkit.export model=mobilefacenet512' in side.read_text()
    copy = tmp_path / mfn512_onnx.name
    shutil.copy(mfn512_onnx, copy)
    shutil.copy(side, sidecar_of(copy))
    assert create_embedder("mobilefacenet512", weights=copy, backend="onnx").contract.embed_dim == 512
    _scramble_middle(copy)
    for backend in ("onnx", "torch"):
        with pytest.raises(DerivedFileError) as err:
            create_embedder("mobilefacenet512", weights=copy, backend=backend)
        assert str(copy) in str(err.value) and "python -m fetoolkit.export" in str(err.value)
