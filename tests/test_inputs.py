"""Every input accounted for (issue 37, findings 3 and 6): each fault injected on temporary copies of
real ORL faces or on small score files, and what the toolkit must do with it -- list it, count it by
a stated rule, or refuse it up front naming the file and the setting.

* identity folders: nested, root-level, special, unreadable files, dangling links and names that are
  not UTF-8 are listed in ``data.skipped``; identity names that differ only by case are flagged;
* repeated and reversed pairs in CSV pairs, LFW ``pairs.txt``, ``.bin``, bob 4/5-column and CSV/Parquet
  score files are counted once (``dataset.duplicate_pairs=once``) and listed;
* non-finite scores (files and models) count as errors: a genuine one a false non-match, an impostor
  one a false match, reported in the console, ``summary.md`` and ``report.md``;
* byte-order marks, files that are not UTF-8, and the pair cap of large identity folders.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from fetoolkit.data import from_identities, load_eval_data
from fetoolkit.data.scores import ScoreFileError, load_scores
from fetoolkit.data.sources import IdentityDataset, load_identity_folder
from fetoolkit.metrics import verification as vm

REPO = Path(__file__).resolve().parents[1]


def _faces(orl: IdentityDataset, root: Path, people: int = 4, per: int = 3) -> Path:
    """Copies of ``per`` photos of ORL's first ``people`` subjects: ``root/p<k>/<j>.pgm``."""
    for k in range(people):
        (root / f"p{k + 1}").mkdir(parents=True)
        for j in range(per):
            shutil.copy(orl.paths[10 * k + j], root / f"p{k + 1}" / f"{j}.pgm")
    return root


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("eval", overrides=overrides)


# ----------------------------------------------------------------------------------------
# Identity folders: nothing skipped silently
# ----------------------------------------------------------------------------------------


def test_identity_folder_lists_nested_root_special_unreadable_and_undecodable_files(orl, tmp_path: Path) -> None:
    root = _faces(orl, tmp_path / "faces")
    (root / "p1" / "extra").mkdir()
    shutil.copy(orl.paths[5], root / "p1" / "extra" / "5.pgm")  # an image in a nested folder
    shutil.copy(orl.paths[6], root / "stray.pgm")  # an image at the root, in no identity folder
    (root / "p2" / "dead.pgm").symlink_to(tmp_path / "gone.pgm")  # a dangling symbolic link
    os.mkfifo(root / "p3" / "pipe.pgm")  # a FIFO: must be listed, never opened (it would block)
    (root / "p3" / "loop.pgm").symlink_to(root / "p3" / "loop.pgm")  # unreadable: a link to itself
    shutil.copy(orl.paths[7], os.fsdecode(bytes(root / "p4") + b"/caf\xe9.pgm"))  # a Latin-1 file name
    os.mkdir(os.fsdecode(bytes(root) + b"/\xe9quipe"))  # an identity folder with a Latin-1 name
    shutil.copy(orl.paths[8], os.fsdecode(bytes(root) + b"/\xe9quipe/1.pgm"))

    ds = load_identity_folder(root)
    assert ds.names == ["p1", "p2", "p3", "p4"]
    assert sorted(str(p.relative_to(root)) for p in ds.paths) == sorted(
        f"p{k}/{j}.pgm" for k in range(1, 5) for j in range(3)
    )
    why = {d["path"][len(str(root)) + 1 :]: d["reason"] for d in ds.skipped}
    assert set(why) == {"p1/extra/5.pgm", "stray.pgm", "p2/dead.pgm", "p3/pipe.pgm", "p3/loop.pgm", "p4/caf\\xe9.pgm",
                        "\\xe9quipe"}, why  # fmt: skip
    assert "nested inside identity folder p1" in why["p1/extra/5.pgm"]
    assert "root of the data set" in why["stray.pgm"]
    assert "symbolic link to a missing target" in why["p2/dead.pgm"]
    assert "FIFO" in why["p3/pipe.pgm"] and "unreadable" in why["p3/loop.pgm"]
    assert "not valid UTF-8" in why["p4/caf\\xe9.pgm"] and "not valid UTF-8" in why["\\xe9quipe"]
    data = from_identities(ds, n_folds=2, seed=0, roc_pairs="all")
    assert data.meta["skipped"] == ds.skipped
    json.dumps(data.meta).encode("utf-8")  # every recorded path can be written
    with pytest.raises(ValueError, match="dataset.strict=true: .* and 7 skipped files"):
        from_identities(ds, n_folds=2, seed=0, roc_pairs="all", strict=True)


def test_an_unreadable_file_is_listed(orl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file without read permission (root reads any file, so there the open is made to fail as it would)."""
    from fetoolkit.data import sources

    root = _faces(orl, tmp_path / "faces")
    locked = root / "p1" / "0.pgm"
    locked.chmod(0)
    if os.geteuid() == 0:

        def refuse(path, *args, **kwargs):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return open(path, *args, **kwargs)

        monkeypatch.setattr(sources, "open", refuse, raising=False)
    ds = load_identity_folder(root)
    assert [Path(d["path"]).name for d in ds.skipped] == ["0.pgm"]
    assert ds.skipped[0]["reason"] == "unreadable (Permission denied)" and locked not in ds.paths


def test_a_non_utf8_file_name_does_not_fail_after_the_computation(orl, tmp_path: Path) -> None:
    """A Latin-1 file name in an identity folder made the eval job fail while writing pairs.parquet,
    after all the computation, naming no file; now it is listed up front and the run finishes. A data
    set folder or LFW tree whose own name is not UTF-8 is refused before any work, naming it."""
    from fetoolkit.eval_run import run

    root = _faces(orl, tmp_path / "faces", people=6)
    os.rename(root / "p2" / "0.pgm", os.fsdecode(bytes(root / "p2") + b"/\xe90.pgm"))
    cfg = _compose(
        ["dataset=folder", f"dataset.root={root}", "dataset.n_folds=2", "stats.n_boot=0", "calibration.method=none",
         "cache.enabled=false", "quality.flip=false"]
    )  # fmt: skip
    out = tmp_path / "run"
    run(cfg, out)
    results = json.loads((out / "results.json").read_text())
    assert results["n_images"] == 17
    assert [d["path"] for d in results["data"]["skipped"]] == [f"{root}/p2/\\xe90.pgm"]
    assert "p2/\\xe90.pgm" in (out / "summary.md").read_text()
    bad_root = Path(os.fsdecode(bytes(tmp_path) + b"/lfw-\xe9"))
    shutil.copytree(root, bad_root)
    (tmp_path / "pairs.txt").write_text("1\t1\np1\t1\t2\np1\t1\tp3\t1\n")
    cfg = OmegaConf.create({"name": "lfw", "root": str(bad_root), "pairs": str(tmp_path / "pairs.txt"), "ext": "pgm"})
    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"not valid UTF-8 \(first: .*lfw-\\xe9/p1/p1_0001.pgm\).*rename"):
        load_eval_data(cfg)
    assert time.perf_counter() - t < 10


def test_identity_names_that_differ_only_by_case_are_flagged_or_refused(orl, tmp_path: Path) -> None:
    """s1 split into s1/ and S1/ counted as two people (every pair of their photos an impostor pair)."""
    from fetoolkit.reports.tables import markdown_summary

    root = tmp_path / "faces"
    for k in range(1, 6):
        (root / f"s{k}").mkdir(parents=True)
        for j in range(1, 11):
            shutil.copy(orl.paths[10 * (k - 1) + j - 1], root / f"s{k}" / f"{j}.pgm")
    (root / "S1").mkdir()
    for j in range(6, 11):
        shutil.move(root / "s1" / f"{j}.pgm", root / "S1" / f"{j}.pgm")
    ds = load_identity_folder(root)
    assert sorted(ds.names) == ["S1", "s1", "s2", "s3", "s4", "s5"]
    data = from_identities(ds, n_folds=2, seed=0, roc_pairs="all")
    twins = data.meta["hygiene"]["identity_case"]
    assert len(twins) == 1 and "differs from" in twins[0]["reason"] and "only by case" in twins[0]["reason"]
    with pytest.raises(ValueError, match="1 identity names that differ only by case"):
        from_identities(ds, n_folds=2, seed=0, roc_pairs="all", strict=True)
    text = markdown_summary(_summary_stub(data=data.meta))
    assert "only by case" in text


def _summary_stub(**extra) -> dict:
    """The least of a results.json summary the Markdown and console summaries read."""
    return {
        "model": "m",
        "backend": "scores",
        "dataset": "d",
        "n_comparisons": 4,
        "n_genuine": 2,
        "n_impostor": 2,
        "auc": 1.0,
        "eer": 0.0,
        "tar_at_far": {},
        **extra,
    }


# ----------------------------------------------------------------------------------------
# Repeated and reversed pairs: counted once, listed
# ----------------------------------------------------------------------------------------


def test_repeated_and_reversed_csv_pairs_are_counted_once(orl, tmp_path: Path) -> None:
    p = [str(x) for x in orl.paths]
    rows = [(p[0], p[1], 1), (p[0], p[10], 0), (p[1], p[0], 1), (p[10], p[11], 1), (p[0], p[10], 0), (p[2], p[20], 0)]
    (tmp_path / "pairs.csv").write_text("\n".join(f"{a},{b},{y}" for a, b, y in rows) + "\n")
    cfg = OmegaConf.create({"name": "csv", "path": str(tmp_path / "pairs.csv"), "n_folds": 2})
    data = load_eval_data(cfg)
    assert len(data.roc) == 4 and data.roc is data.kfold
    rep = data.meta["duplicate_pairs"]
    assert (rep["n_pairs"], rep["n_extra"], rep["n_reversed"], rep["policy"]) == (2, 2, 1, "once")
    assert rep["examples"][0]["rows"] == "line 1, line 3" and "1 reversed" in rep["examples"][0]["reason"]
    cfg.duplicate_pairs = "keep"
    assert len(load_eval_data(cfg).roc) == 6
    cfg.duplicate_pairs = "twice"
    with pytest.raises(ValueError, match="dataset.duplicate_pairs must be one of once, keep"):
        load_eval_data(cfg)


def test_repeated_and_reversed_lfw_pairs_are_counted_once(orl, tmp_path: Path) -> None:
    from fetoolkit.data.lfw import write_pairs

    root = tmp_path / "lfw"
    for k in range(1, 5):
        (root / f"s{k}").mkdir(parents=True)
        for j in range(1, 4):
            shutil.copy(orl.paths[10 * (k - 1) + j - 1], root / f"s{k}" / f"s{k}_{j:04d}.pgm")
    matched = [("s1", 1, 2), ("s2", 1, 2), ("s1", 2, 1)]  # the third reverses the first
    mismatched = [("s1", 1, "s2", 1), ("s3", 1, "s4", 1), ("s3", 1, "s4", 1)]  # the third repeats the second
    write_pairs(tmp_path / "pairs.txt", [(matched, mismatched), ([("s3", 1, 2)] * 3, [("s2", 3, "s4", 3)] * 3)])
    cfg = OmegaConf.create({"name": "lfw", "root": str(root), "pairs": str(tmp_path / "pairs.txt"), "ext": "pgm"})
    data = load_eval_data(cfg)
    assert len(data.roc) == 6 and data.roc.n_genuine == 3
    rep = data.meta["duplicate_pairs"]
    assert (rep["n_pairs"], rep["n_extra"], rep["n_reversed"]) == (4, 6, 1)


def test_repeated_pairs_of_a_bin_are_counted_once(orl, tmp_path: Path) -> None:
    from fetoolkit.data.binset import write_bin

    img = [orl.paths[k].read_bytes() for k in range(0, 40, 2)]  # 20 distinct photos
    pairs = [(img[k], img[k + 1]) for k in range(0, 16, 2)] + [(img[1], img[0]), (img[2], img[3])]
    issame = [k % 2 == 0 for k in range(8)] + [True, False]
    write_bin(tmp_path / "t.bin", [x for ab in pairs for x in ab], issame)
    data = load_eval_data(OmegaConf.create({"name": "bin", "path": str(tmp_path / "t.bin"), "n_folds": 2}))
    rep = data.meta["duplicate_pairs"]
    assert len(data.roc) == 8 and (rep["n_extra"], rep["n_reversed"]) == (2, 1)


def _bob_scores(repeat: int) -> str:
    """8 genuine and 20 impostor comparisons of bob4 lines; one high impostor listed ``repeat`` times."""
    rng = np.random.default_rng(0)
    lines = [f"c{k} c{k} c{k}_t {0.7 + 0.02 * k:.3f}" for k in range(8)]
    lines += [f"c{k % 8} c{(k + 1) % 8} c{(k + 1) % 8}_t{k} {rng.uniform(0.0, 0.5):.3f}" for k in range(20)]
    lines += ["c0 c5 c5_x 0.75"] * repeat
    return "\n".join(lines) + "\n"


def test_one_impostor_pair_listed_21_times_counts_once(tmp_path: Path) -> None:
    (tmp_path / "once.txt").write_text(_bob_scores(1))
    (tmp_path / "x21.txt").write_text(_bob_scores(21))
    once, x21 = load_scores(tmp_path / "once.txt"), load_scores(tmp_path / "x21.txt")
    assert len(x21.roc) == len(once.roc) == 29
    assert vm.eer(x21.roc.scores, x21.roc.labels).eer == vm.eer(once.roc.scores, once.roc.labels).eer
    rep = x21.meta["duplicate_pairs"]
    assert (rep["n_pairs"], rep["n_extra"]) == (1, 20) and "x21.txt:29" in rep["examples"][0]["rows"]
    kept = load_scores(tmp_path / "x21.txt", duplicate_pairs="keep")
    assert len(kept.roc) == 49
    assert vm.eer(kept.roc.scores, kept.roc.labels).eer > vm.eer(once.roc.scores, once.roc.labels).eer
    from fetoolkit.reports.tables import format_summary
    from fetoolkit.score_eval import run_scores

    cfg = _compose(
        ["dataset=scores", f"dataset.path={tmp_path / 'x21.txt'}", "stats.n_boot=0", "calibration.method=none"]
    )
    summary = run_scores(cfg, tmp_path / "run")
    assert summary["data"]["duplicate_pairs"]["n_extra"] == 20 and summary["n_comparisons"] == 29
    for text in (format_summary(summary), *((tmp_path / "run" / f).read_text() for f in ("summary.md", "report.md"))):
        assert "1 pairs listed more than once (20 extra rows" in text and "c0 & c5_x at x21.txt:29" in text, text


def test_reversed_pairs_in_bob5_csv_and_parquet_score_files(tmp_path: Path) -> None:
    (tmp_path / "s5.txt").write_text(
        "a m1 a t1 0.9\na m1 b t2 0.2\nb t2 a m1 0.2\nb t2 b t3 0.8\na m1 a t1 0.9\nb t3 c t4 0.1\n"
    )
    s5 = load_scores(tmp_path / "s5.txt")
    assert len(s5.roc) == 4 and (s5.meta["duplicate_pairs"]["n_extra"], s5.meta["duplicate_pairs"]["n_reversed"]) == (
        2,
        1,
    )
    df = pd.DataFrame(
        {
            "label": [1, 0, 0, 1, 0],
            "score": [0.9, 0.3, 0.3, 0.8, 0.1],
            "item1": ["x/1", "x/1", "y/1", "y/1", "z/1"],
            "item2": ["x/2", "y/1", "x/1", "y/2", "x/2"],
        }
    )
    df.to_csv(tmp_path / "s.csv", index=False)
    df.to_parquet(tmp_path / "s.parquet")
    for name in ("s.csv", "s.parquet"):
        s = load_scores(tmp_path / name)
        assert len(s.roc) == 4 and s.meta["duplicate_pairs"]["n_reversed"] == 1, name
    df[["label", "score"]].to_csv(tmp_path / "bare.csv", index=False)  # no items: repeats cannot be told
    assert load_scores(tmp_path / "bare.csv").meta["duplicate_pairs"]["checked"] is False
    # rows whose items are empty cannot be told apart: integer matcher scores of distinct comparisons
    # with the same subjects are all counted (review of this first version)
    blank = pd.DataFrame(
        {"label": [1, 1, 1, 0], "score": [7, 7, 7, 2], "subject1": ["a"] * 4, "subject2": ["a", "a", "a", "b"]}
    )
    blank["item1"], blank["item2"] = "", ""
    blank.to_csv(tmp_path / "blank.csv", index=False)
    assert len(load_scores(tmp_path / "blank.csv").roc) == 4


# ----------------------------------------------------------------------------------------
# Non-finite scores: errors by a stated rule, reported everywhere
# ----------------------------------------------------------------------------------------


def _nonfinite_file(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A CSV score file: 30 genuine, 300 impostor, with a NaN and a -inf genuine and a +inf and a NaN
    impostor score; and the scores with the rule applied by hand (below / above every finite score)."""
    rng = np.random.default_rng(1)
    g, i = rng.normal(0.6, 0.1, 30), rng.normal(0.1, 0.1, 300)
    g[[3, 7]] = [np.nan, -np.inf]
    i[[5, 9]] = [np.inf, np.nan]
    s = np.concatenate([g, i])
    y = np.r_[np.ones(30, bool), np.zeros(300, bool)]
    subjects = [f"p{k}" for k in range(30)] + [f"p{k % 30}" for k in range(300)]
    others = [f"p{k}" for k in range(30)] + [f"p{(k + 1 + k // 30) % 30}" for k in range(300)]
    pd.DataFrame({"label": y.astype(int), "score": s, "subject1": subjects, "subject2": others}).to_csv(
        tmp_path / "s.csv", index=False
    )
    finite = s[np.isfinite(s)]
    by_hand = np.where(np.isfinite(s), s, np.where(y, finite.min() - 1, finite.max() + 1))
    return tmp_path / "s.csv", by_hand, y


def test_nonfinite_scores_count_as_errors_not_dropped(tmp_path: Path) -> None:
    path, by_hand, y = _nonfinite_file(tmp_path)
    s = load_scores(path)
    assert len(s.roc) == 330 and s.n_missing == 0
    nf = s.meta["nonfinite_scores"]
    assert (nf["n_genuine"], nf["n_impostor"], nf["policy"]) == (2, 2, "errors")
    got = vm.verification_report(s.roc.scores, s.roc.labels, fars=(1e-1, 1e-2))
    want = vm.verification_report(by_hand, y, fars=(1e-1, 1e-2))
    assert got.eer == want.eer and got.auc == want.auc
    assert [t.tar for t in got.tar_at_far.values()] == [t.tar for t in want.tar_at_far.values()]
    finite = np.isfinite(pd.read_csv(path)["score"].to_numpy())
    dropped = vm.eer(by_hand[finite], y[finite]).eer
    assert got.eer > dropped  # dropping them flattered the EER
    with pytest.raises(ScoreFileError, match=r"4 scores are not finite .*first: s.csv:5: genuine score nan.*refuse"):
        load_scores(path, nonfinite_scores="refuse")


def test_nonfinite_scores_are_reported_in_console_summary_and_report(tmp_path: Path) -> None:
    from fetoolkit.reports.tables import format_summary
    from fetoolkit.score_eval import run_scores

    path, _, _ = _nonfinite_file(tmp_path)
    cfg = _compose(["dataset=scores", f"dataset.path={path}", "stats.n_boot=0", "calibration.method=none"])
    out = tmp_path / "run"
    summary = run_scores(cfg, out)
    assert summary["nonfinite_scores"]["n_genuine"] == 2 and summary["n_comparisons"] == 330
    for text in (format_summary(summary), (out / "summary.md").read_text(), (out / "report.md").read_text()):
        assert "2 genuine counted as false non-matches, 2 impostor as false matches" in text, text
    table = pd.read_parquet(out / "pairs.parquet")
    assert int(table["score"].isna().sum()) == 2 and int(np.isinf(table["score"]).sum()) == 2  # kept as read
    again = run_scores(_compose(["dataset=scores", f"dataset.path={out}", "stats.n_boot=0", "calibration.method=none"]))
    assert again["eer"] == summary["eer"] and again["tar_at_far"] == summary["tar_at_far"]
    cfg.nonfinite_scores = "refuse"
    with pytest.raises(ScoreFileError, match="nonfinite_scores=refuse"):
        run_scores(cfg)


def test_a_model_that_outputs_nan_counts_its_pairs_as_errors(orl_embedded) -> None:
    """One image's embedding turned NaN (a model fault): its genuine pairs are false non-matches, its
    impostor pairs false matches; the evaluation used to stop on 'scores must be finite'."""
    from dataclasses import replace

    from fetoolkit.evaluate import evaluate
    from fetoolkit.figures import StatsCfg
    from fetoolkit.models.factory import create_embedder

    data, es = orl_embedded
    raw = es.raw.copy()
    raw[13] = np.nan
    bad = replace(es, raw=raw, raw_flip=None if es.raw_flip is None else es.raw_flip.copy())
    if bad.raw_flip is not None:
        bad.raw_flip[13] = np.nan
    embedder = create_embedder("arcface")
    clean = evaluate(data, embedder, embedded=es, stats=StatsCfg(n_boot=0))
    ev = evaluate(data, embedder, embedded=bad, stats=StatsCfg(n_boot=0))
    nf = ev.summary["nonfinite_scores"]
    assert (nf["n_genuine"], nf["n_impostor"]) == (9, 390)
    assert ev.summary["eer"] > clean.summary["eer"] and ev.summary["n_genuine"] == clean.summary["n_genuine"]
    miss = ev.roc_pairs.labels & ((ev.roc_pairs.idx_a == 13) | (ev.roc_pairs.idx_b == 13))
    assert (ev.roc_scores[miss] < ev.roc_scores[~miss].min()).all()  # below every finite score


# ----------------------------------------------------------------------------------------
# Byte-order marks, files that are not UTF-8
# ----------------------------------------------------------------------------------------


def test_a_byte_order_mark_is_not_part_of_a_path_or_an_id(orl, tmp_path: Path) -> None:
    from fetoolkit.data.csvpairs import load_pairs_csv
    from fetoolkit.data.lfw import parse_pairs

    bom = "\ufeff"
    p = [str(x) for x in orl.paths]
    rows = [f"{p[0]},{p[1]},1", f"{p[0]},{p[10]},0", f"{p[10]},{p[11]},1", f"{p[1]},{p[20]},0"]
    (tmp_path / "pairs.csv").write_text(bom + "\n".join(rows) + "\n", encoding="utf-8")  # no header
    c = load_pairs_csv(tmp_path / "pairs.csv", n_folds=2)
    assert str(c.paths[0]) == p[0] and all(x.is_file() for x in c.paths)
    (tmp_path / "pairs.txt").write_text(bom + "1\t1\na\t1\t2\na\t1\tb\t1\n", encoding="utf-8")
    assert len(parse_pairs(tmp_path / "pairs.txt")[0]) == 2
    (tmp_path / "s.txt").write_text(bom + "s1 s1 s1_2 0.9\ns1 s2 s2_1 0.2\n", encoding="utf-8")
    s = load_scores(tmp_path / "s.txt")
    assert s.roc.labels.tolist() == [True, False] and s.roc.subject_a[0] == "s1"


def test_files_that_are_not_utf8_are_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    from fetoolkit.data.csvpairs import PairsCsvError, load_pairs_csv

    (tmp_path / "pairs.csv").write_bytes(b"a.jpg,b.jpg,1\nJos\xe9.jpg,c.jpg,0\n")
    with pytest.raises(PairsCsvError, match="pairs.csv: not UTF-8 text.*iconv"):
        load_pairs_csv(tmp_path / "pairs.csv")
    (tmp_path / "s.txt").write_bytes(b"Jos\xe9 Jos\xe9 x 0.9\nJos\xe8 Jos\xe9 y 0.1\n")
    with pytest.raises(ScoreFileError, match=r"s.txt:1: not UTF-8 text \(byte 0xe9"):
        load_scores(tmp_path / "s.txt")


# ----------------------------------------------------------------------------------------
# The pair cap: checked from the image counts, naming the settings; the log bounded
# ----------------------------------------------------------------------------------------


def _big(n_single: int) -> IdentityDataset:
    """ORL's 400 labels plus ``n_single`` identities of one image (paths that are never read)."""
    ids = np.r_[np.repeat(np.arange(40), 10), 40 + np.arange(n_single)]
    paths = [Path(f"/nonexistent/{k}.pgm") for k in range(len(ids))]
    return IdentityDataset("big", paths, ids.astype(np.int64), [f"id{k}" for k in range(int(ids.max()) + 1)])


def test_50000_images_are_refused_up_front_naming_the_settings() -> None:
    ds = _big(49_600)
    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"50,000 images make 1,249,975,000 pairs .*dataset.roc_pairs=all.*"
                       r"dataset.max_pairs=50,000,000.*dataset.n_folds=25"):  # fmt: skip
        from_identities(ds, 10, 0, "all")
    with pytest.raises(ValueError, match=r"enumerates 124,\d{3},\d{3} pairs within its 10 folds.*dataset.n_folds=25"):
        from_identities(ds, 10, 0, "kfold")
    assert time.perf_counter() - t < 5  # from the counts, before any pair is made or file read
    small = _big(2_000)
    with pytest.raises(ValueError, match=r"set dataset.roc_pairs=kfold \(the ROC over the k-fold pairs: up to 3,600"):
        from_identities(small, 10, 0, "all", max_pairs=1_000_000)


def test_a_data_set_of_many_single_image_identities_logs_a_bounded_summary(caplog: pytest.LogCaptureFixture) -> None:
    ds = _big(3_000)
    with caplog.at_level(logging.WARNING, logger="fetoolkit"):
        data = from_identities(ds, 10, 0, "kfold")
    assert len(data.meta["hygiene"]["single_image_identities"]) == 3_000
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) <= 10, len(lines)
    assert any("and 2995 more like these" in r.getMessage() for r in lines)
