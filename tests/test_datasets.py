"""Data set readers: LFW pairs.txt, insightface .bin (restricted unpickler), CSV pairs, identity folders.

Real faces are written into each layout: ORL as an LFW tree with a pairs.txt and as a .bin of
aligned crops must score like ``dataset=orl``; the in-the-wild photos go through the LFW
reader with detection and alignment.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from fetoolkit.cache import EmbeddingCache
from fetoolkit.data import from_identities, load_eval_data
from fetoolkit.data.binset import BinFileError, load_bin, read_bin, safe_loads, write_bin
from fetoolkit.data.csvpairs import PairsCsvError, load_pairs_csv, write_pairs_csv
from fetoolkit.data.export import encode_jpeg, write_aligned_bin, write_lfw_tree
from fetoolkit.data.lfw import PairsFileError, load_lfw, parse_pairs, write_pairs
from fetoolkit.data.sources import IdentityDataset
from fetoolkit.data.wild import load_wild
from fetoolkit.eval_run import run
from fetoolkit.evaluate import QualityCfg, StatsCfg, evaluate
from fetoolkit.imageio import read_image
from fetoolkit.models.factory import create_embedder
from fetoolkit.pipeline import PipelineCfg

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def compose_eval(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("eval", overrides=overrides)


# --------------------------------------------------------------------------------------------
# LFW pairs.txt
# --------------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_parse_pairs_standard_header(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "pairs.txt",
        "2\t2\nA\t1\t2\nB\t1\t3\nA\t1\tB\t2\nC\t4\tA\t2\nC\t1\t2\nA\t2\t3\nB\t1\tC\t1\nA\t3\tC\t2\n",
    )
    pairs, n_sets, n_per = parse_pairs(p)
    assert (n_sets, n_per, len(pairs)) == (2, 2, 8)
    assert [q.fold for q in pairs] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [q.same for q in pairs] == [True, True, False, False] * 2
    assert (pairs[2].name1, pairs[2].i, pairs[2].name2, pairs[2].j) == ("A", 1, "B", 2)


def test_parse_pairs_single_number_header(tmp_path: Path) -> None:
    """pairsDevTrain.txt style: one number N, then N matched and N mismatched pairs, one set."""
    p = _write(tmp_path / "pairsDevTrain.txt", "1\nA 1 2\nA 1 B 1\n")
    pairs, n_sets, n_per = parse_pairs(p)
    assert (n_sets, n_per) == (1, 1) and [q.same for q in pairs] == [True, False]


@pytest.mark.parametrize(
    "text, match",
    [
        ("x y\nA 1 2\nA 1 B 1\n", "header"),
        ("1 1\nA 1 2\n", "announces"),
        ("1 1\nA 1\nA 1 B 1\n", ":2: expected"),
        ("1 1\nA 1 2\nA one B 1\n", ":3: expected"),
        ("1 1\nA 1 2\nA 1 A 2\n", "same person"),
        ("1 1\nA 1 2\nA 1 3\n", "set 1 holds 2 matched"),
        ("1 1\nA 0 2\nA 1 B 1\n", "start at 1"),
    ],
)
def test_parse_pairs_errors_name_the_line(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(PairsFileError, match=match):
        parse_pairs(_write(tmp_path / "pairs.txt", text))


def test_load_lfw_paths_and_identities(tmp_path: Path) -> None:
    write_pairs(tmp_path / "pairs.txt", [([("Ann_Lee", 1, 2)], [("Ann_Lee", 1, "Bob", 3)])])
    s = load_lfw(tmp_path, tmp_path / "pairs.txt")
    assert [p.relative_to(tmp_path).as_posix() for p in s.paths] == [
        "Ann_Lee/Ann_Lee_0001.jpg",
        "Ann_Lee/Ann_Lee_0002.jpg",
        "Bob/Bob_0003.jpg",
    ]
    assert s.names == ["Ann_Lee", "Bob"] and s.identities.tolist() == [0, 0, 1]
    assert s.pairs.idx_a.tolist() == [0, 0] and s.pairs.idx_b.tolist() == [1, 2]
    assert s.pairs.labels.tolist() == [True, False]
    with pytest.raises(FileNotFoundError, match="dataset.root"):
        load_lfw(tmp_path / "nope", tmp_path / "pairs.txt")


# --------------------------------------------------------------------------------------------
# insightface .bin and the restricted unpickler
# --------------------------------------------------------------------------------------------


def _py2_pickle(images: list[bytes], issame: list[bool]) -> bytes:
    """What Python 2's cPickle.dump((bins, issame), f, protocol=2) writes: images as str opcodes."""
    out = bytearray(b"\x80\x02")  # PROTO 2
    out += b"]("  # EMPTY_LIST, MARK
    for blob in images:
        if len(blob) < 256:
            out += b"U" + bytes([len(blob)]) + blob  # SHORT_BINSTRING
        else:
            out += b"T" + struct.pack("<i", len(blob)) + blob  # BINSTRING
    out += b"e"  # APPENDS
    out += b"]("
    out += b"".join(b"\x88" if s else b"\x89" for s in issame)  # NEWTRUE / NEWFALSE
    out += b"e\x86."  # APPENDS, TUPLE2, STOP
    return bytes(out)


IMAGES = [b"\xff\xd8jpeg-one", b"\xff\xd8jpeg-two" * 40, b"\xff\xd8jpeg-one", b"\xff\xd8jpeg-three"]


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("form", ["bytes+list", "uint8+ndarray", "bytes+npbools"])
def test_safe_loads_reads_what_insightface_writes(protocol: int, form: str) -> None:
    if form == "bytes+list":
        obj = (IMAGES, [True, False])
    elif form == "uint8+ndarray":
        obj = ([np.frombuffer(b, np.uint8) for b in IMAGES], np.array([True, False]))
    else:
        obj = (IMAGES, [np.bool_(True), np.bool_(False)])
    bins, issame = safe_loads(pickle.dumps(obj, protocol=protocol))
    got = [b if isinstance(b, bytes) else b.tobytes() for b in bins]
    assert got == IMAGES and [bool(x) for x in issame] == [True, False]


def test_safe_loads_python2_and_numpy1_pickles(tmp_path: Path) -> None:
    bins, issame = safe_loads(_py2_pickle(IMAGES, [True, False]))
    assert bins == IMAGES and issame == [True, False]
    # numpy 1.x writes numpy.core.multiarray; numpy 2 numpy._core.multiarray (protocol 2 is text).
    data = pickle.dumps((IMAGES, np.array([False, True])), protocol=2)
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != data
    assert safe_loads(old)[1].tolist() == [False, True]
    p = tmp_path / "py2.bin"
    p.write_bytes(_py2_pickle(IMAGES, [True, False]))
    images, same = read_bin(p)
    assert images == IMAGES and same.dtype == bool and same.tolist() == [True, False]


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for obj in [(_Evil(marker), [True]), ([b"x", b"y"], _Evil(marker))]:
        p = tmp_path / "evil.bin"
        p.write_bytes(pickle.dumps(obj, protocol=2))
        with pytest.raises(BinFileError, match="refusing to load global"):
            read_bin(p)
    assert not marker.exists()
    with pytest.raises(Exception, match="refusing"):
        safe_loads(pickle.dumps(np.array([b"a", 1], dtype=object), protocol=4))
    with pytest.raises(Exception, match="refusing"):
        safe_loads(pickle.dumps(eval, protocol=4))  # builtins.eval


@pytest.mark.parametrize(
    "obj, match",
    [
        ({"bins": []}, "expected a pickled"),
        (([b"a", b"b", b"c"], [True]), "3 images for 1 pairs"),
        (([b"a", 5], [True]), "image 1 is a int"),
        (([b"a", b"b"], ["yes"]), "non-bool"),
    ],
)
def test_read_bin_rejects_malformed(tmp_path: Path, obj, match: str) -> None:
    p = tmp_path / "bad.bin"
    p.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(BinFileError, match=match):
        read_bin(p)


def test_load_bin_merges_duplicates_and_folds(tmp_path: Path) -> None:
    imgs = [IMAGES[i % 4] for i in range(40)]  # 20 pairs, 3 distinct images
    p = write_bin(tmp_path / "x.bin", imgs, [k % 2 == 0 for k in range(20)], protocol=2)
    b = load_bin(p, n_folds=10)
    assert len(b.images) == 3 and b.n_encoded == 40
    assert [b.images[i] for i in b.pairs.idx_a] == imgs[0::2]
    assert [b.images[i] for i in b.pairs.idx_b] == imgs[1::2]
    assert b.pairs.folds.tolist() == np.repeat(np.arange(10), 2).tolist()


# --------------------------------------------------------------------------------------------
# CSV pairs
# --------------------------------------------------------------------------------------------


def test_pairs_csv(tmp_path: Path) -> None:
    rows = [
        ("a/1.jpg", "a/2.jpg", True),
        ("a/1.jpg", "b/1.jpg", False),
        ("/abs/c.jpg", "b/1.jpg", False),
        ("b/1.jpg", "b/2.jpg", True),
    ]
    c = load_pairs_csv(write_pairs_csv(tmp_path / "p.csv", rows), n_folds=2)
    assert [p.as_posix() for p in c.paths] == [
        f"{tmp_path}/a/1.jpg",
        f"{tmp_path}/a/2.jpg",
        f"{tmp_path}/b/1.jpg",
        "/abs/c.jpg",
        f"{tmp_path}/b/2.jpg",
    ]
    assert c.pairs.labels.tolist() == [True, False, False, True]
    assert sorted(np.bincount(c.pairs.folds).tolist()) == [2, 2]
    for cls in (True, False):  # stratified: each fold holds one of each class
        assert sorted(c.pairs.folds[c.pairs.labels == cls].tolist()) == [0, 1]
    # No header, explicit folds, other label words, another root.
    p = _write(tmp_path / "q.csv", "x.png,y.png,same,7\nx.png,z.png,different,9\n")
    c = load_pairs_csv(p, root="/data")
    assert c.paths[0] == Path("/data/x.png") and c.pairs.folds.tolist() == [0, 1]
    for text, match in [
        ("a,b\n", "2 fields"),
        ("a.jpg,b.jpg,maybe\n", "label 'maybe'"),
        ("path1,path2,label\n", "no pairs"),
        ("a,b,1\nc,d,1\n", "both genuine"),
    ]:
        with pytest.raises(PairsCsvError, match=match):
            load_pairs_csv(_write(tmp_path / "bad.csv", text))


# --------------------------------------------------------------------------------------------
# Real faces in each layout
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wild_lfw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The in-the-wild photos as an LFW tree: 2 sets of 1 matched + 1 mismatched pair."""
    out = tmp_path_factory.mktemp("wild_lfw")
    wild = load_wild()
    files = {
        ("Barack_Obama", 1): "obama.jpg",
        ("Barack_Obama", 2): "obama2.jpg",
        ("Barack_Obama", 3): "obama3.jpg",
        ("Joe_Biden", 1): "biden.jpg",
    }
    for (name, i), f in files.items():
        (out / name).mkdir(exist_ok=True)
        (out / name / f"{name}_{i:04d}.jpg").write_bytes(wild[f].read_bytes())
    pairs = write_pairs(
        out / "pairs.txt",
        [
            ([("Barack_Obama", 1, 2)], [("Barack_Obama", 1, "Joe_Biden", 1)]),
            ([("Barack_Obama", 2, 3)], [("Barack_Obama", 3, "Joe_Biden", 1)]),
        ],
    )
    return out, pairs


def test_lfw_reader_on_wild_photos_detects_and_aligns(wild_lfw: tuple[Path, Path], tmp_path: Path) -> None:
    root, pairs = wild_lfw
    cfg = compose_eval(["dataset=lfw", f"dataset.root={root}", f"dataset.pairs={pairs}"])
    data = load_eval_data(cfg.dataset)
    assert data.name == "lfw" and not data.aligned and len(data.paths) == 4
    ev = evaluate(
        data,
        create_embedder("arcface"),
        pipeline=PipelineCfg(progress=False),
        cache=EmbeddingCache(tmp_path / "cache"),
        stats=StatsCfg(n_boot=50),
        quality=QualityCfg(flip=False),
    )
    s = ev.summary
    assert s["fte"] == 0 and (ev.embedded.n_faces >= 1).all() and np.isfinite(ev.embedded.det_scores).all()
    assert s["kfold"]["n_folds"] == 2 and s["n_genuine"] == 2 and s["n_impostor"] == 2
    gen, imp = ev.roc_scores[ev.roc_pairs.labels], ev.roc_scores[~ev.roc_pairs.labels]
    assert gen.min() > 0.5 > imp.max(), (gen, imp)  # same person across photos vs Obama/Biden
    assert s["accuracy_mean"] == 1.0 and s["eer"] == 0.0


@pytest.fixture(scope="module")
def orl_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``dataset=orl`` (served from the embedding cache after the first run on a machine)."""
    return run(
        compose_eval(["model=arcface", "dataset=orl", "pipeline.progress=false"]), tmp_path_factory.mktemp("orl")
    )


@pytest.fixture(scope="module")
def orl_layouts(tmp_path_factory: pytest.TempPathFactory, orl: IdentityDataset, detector) -> dict[str, Path]:
    """ORL's k-fold protocol as an LFW tree + pairs.txt and as a .bin of MTCNN-aligned crops."""
    from fetoolkit.detect.mtcnn import DetectorCfg
    from fetoolkit.pipeline import cached_crops, detector_settings

    out = tmp_path_factory.mktemp("orl_layouts")
    data = from_identities(orl, 10, 0, "kfold")
    root, pairs = write_lfw_tree(orl.paths, orl.identities, orl.names, data.kfold, out / "lfw_layout")
    crops, _ = cached_crops(
        orl.paths,
        PipelineCfg(progress=False),
        detector=detector,
        cache=EmbeddingCache(),
        detector_settings=detector_settings(DetectorCfg()),
    )
    assert crops.ok.all()
    binfile = write_aligned_bin(crops.faces, data.kfold, out / "orl_aligned.bin", protocol=2)
    return {"root": root, "pairs": pairs, "bin": binfile}


def test_orl_as_lfw_tree_matches_dataset_orl(orl_run: dict, orl_layouts: dict[str, Path], tmp_path: Path) -> None:
    res = run(
        compose_eval(
            [
                "model=arcface",
                "dataset=lfw",
                f"dataset.root={orl_layouts['root']}",
                f"dataset.pairs={orl_layouts['pairs']}",
                "pipeline.progress=false",
            ]
        ),
        tmp_path,
    )
    assert res["n_images"] == 400 and res["fte"] == 0
    assert (res["n_genuine"], res["n_impostor"]) == (1800, 1800) and res["kfold"]["n_folds"] == 10
    _close_to_orl(res, orl_run)


def test_orl_as_aligned_bin_matches_dataset_orl(orl_run: dict, orl_layouts: dict[str, Path], tmp_path: Path) -> None:
    res = run(
        compose_eval(["model=arcface", "dataset=bin", f"dataset.path={orl_layouts['bin']}", "pipeline.progress=false"]),
        tmp_path,
    )
    assert res["dataset"] == "orl_aligned" and res["n_images"] == 400  # 7200 encoded crops, merged
    assert res["data"]["n_encoded"] == 7200 and res["fte"] == 0
    assert res["quality"].get("genuine_spread") is None  # a .bin carries no identities
    assert (res["n_genuine"], res["n_impostor"]) == (1800, 1800) and res["kfold"]["n_folds"] == 10
    _close_to_orl(res, orl_run)


def _close_to_orl(res: dict, orl: dict) -> None:
    for key in ("accuracy_mean", "eer"):
        assert abs(res[key] - orl[key]) <= 0.01, (key, res[key], orl[key])
    assert res["accuracy_mean"] >= 0.99 and orl["accuracy_mean"] >= 0.99
    assert res["accuracy_ci"][0] <= res["accuracy_mean"] <= res["accuracy_ci"][1]
    assert res["eer_ci"][0] <= res["eer"] <= res["eer_ci"][1]
    assert set(res["tar_at_far_ci"]) >= {"1e-1", "1e-2", "1e-3"}
    json.dumps(res, allow_nan=False)


def test_folder_and_csv_layouts_of_orl_subset(tmp_path: Path, orl: IdentityDataset) -> None:
    """dataset=folder and dataset=csv on the same 8 ORL subjects give identical embeddings."""
    sub = [(p, i) for p, i in zip(orl.paths, orl.identities) if i < 8 and p.stem in {"1", "2", "3"}]
    rows = []
    for p, i in sub:
        d = tmp_path / "folder" / orl.names[i]
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{p.stem}.jpg").write_bytes(encode_jpeg(read_image(p)))
    cfg = compose_eval(
        ["dataset=folder", f"dataset.root={tmp_path / 'folder'}", "dataset.n_folds=2", "dataset.label=orl8"]
    )
    data = load_eval_data(cfg.dataset)
    assert data.name == "orl8" and len(data.paths) == 24 and len(set(data.identities.tolist())) == 8
    for a, b, y in zip(data.roc.idx_a, data.roc.idx_b, data.roc.labels):
        rows.append((str(data.paths[a].relative_to(tmp_path)), str(data.paths[b].relative_to(tmp_path)), bool(y)))
    csv_path = write_pairs_csv(tmp_path / "pairs.csv", rows)
    cdata = load_eval_data(compose_eval(["dataset=csv", f"dataset.path={csv_path}", "dataset.n_folds=2"]).dataset)
    assert len(cdata.roc) == len(data.roc) == 24 * 23 // 2
    cache = EmbeddingCache(tmp_path / "cache")
    emb = create_embedder("arcface")
    kw = dict(
        pipeline=PipelineCfg(progress=False), cache=cache, stats=StatsCfg(n_boot=0), quality=QualityCfg(flip=False)
    )
    a, b = evaluate(data, emb, **kw), evaluate(cdata, emb, **kw)
    assert a.summary["fte"] == b.summary["fte"] == 0
    assert b.summary["cache"] == "hit"  # same images in the same order: nothing recomputed
    np.testing.assert_allclose(np.sort(a.roc_scores), np.sort(b.roc_scores), atol=1e-6)
    assert a.summary["eer"] == b.summary["eer"] and a.summary["eer"] < 0.05


def test_pairs_csv_header_with_a_label_word_is_a_header(tmp_path: Path) -> None:
    """``a,b,same``: "same" is a label word, but the row names no image while the next ones do."""
    body = "a,b,same\nx/1.png,x/2.png,1\nx/1.png,y/1.png,0\nx/2.png,y/1.png,0\ny/1.png,y/2.png,1\n"
    c = load_pairs_csv(_write(tmp_path / "h.csv", body), n_folds=2)
    assert len(c.pairs) == 4 and c.pairs.labels.tolist() == [True, False, False, True]
    assert all(p.suffix == ".png" for p in c.paths)
    # A first row that names images stays a pair, whatever its label word.
    c = load_pairs_csv(_write(tmp_path / "n.csv", body.split("\n", 1)[1]), n_folds=2)
    assert len(c.pairs) == 4


def test_bin_declaring_a_huge_array_is_refused_naming_the_file(tmp_path: Path) -> None:
    import pickle

    from fetoolkit.data.binset import BinFileError, read_bin

    class Huge:
        def __reduce__(self):  # what a hostile .bin would carry: a 10^12-byte array, no data
            return (np._core.multiarray._reconstruct, (np.ndarray, (10**12,), b"b"))

    path = tmp_path / "huge.bin"
    path.write_bytes(pickle.dumps(([Huge()], [True]), protocol=2))
    with pytest.raises(BinFileError, match="refusing an array of 1e\\+12 bytes") as err:
        read_bin(path)
    assert str(path) in str(err.value)


@pytest.mark.slow
def test_bin_export_aligns_with_the_detector_asked_for(tmp_path: Path) -> None:
    """``data.export --bin F --detector yunet``: the .bin holds YuNet's crops, and evaluates like
    ``dataset=orl detector=yunet`` (the crops are re-encoded as JPEG, so within 0.01)."""
    from fetoolkit.data.export import main

    assert main(["--bin", str(tmp_path / "y.bin"), "--detector", "yunet"]) == 0
    yunet = run(
        compose_eval(["model=arcface", "dataset=orl", "detector=yunet", "pipeline.progress=false"]), tmp_path / "a"
    )
    res = run(
        compose_eval(["model=arcface", "dataset=bin", f"dataset.path={tmp_path / 'y.bin'}", "pipeline.progress=false"]),
        tmp_path / "b",
    )
    _close_to_orl(res, yunet)
    mtcnn = run(compose_eval(["model=arcface", "dataset=orl", "pipeline.progress=false"]), tmp_path / "c")
    assert abs(res["eer"] - yunet["eer"]) < abs(res["eer"] - mtcnn["eer"]), (res["eer"], yunet["eer"], mtcnn["eer"])
    with pytest.raises(SystemExit):
        main(["--bin", str(tmp_path / "z.bin"), "--detector", "no-such-detector"])
