"""Every README command, executed by bash as written, or classified with the reason it is not.

The slow tests run each command of the README's bash blocks in a scratch folder (the current
folder of every command, so ``outputs/``, ``multirun/``, ``stores/`` and ``models/`` land there,
never in the checkout) that holds ``.venv`` (a link to the environment under test) and a copy of
``notebooks/``, with
``PYTHONPATH`` set to this checkout (the tree under test runs) and ``.venv/bin`` first on ``PATH``
(an activated venv: the README's bare ``python`` and ``ray``). Only the placeholders of
:data:`PLACEHOLDERS` are substituted; the data behind them are real ORL faces (and the wild photos)
written in the published layouts by the project's own writers, a few subjects each so that every
eval takes seconds. Each command must exit as documented and leave something checkable.

The default-suite test :func:`test_every_readme_command_is_classified` fails when a README command
is neither executed here, nor by the quick/curl tests, nor in :data:`EXCLUDED` with its reason.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_readme import COMMANDS  # noqa: E402

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
#: The environment under test: the checkout's ``.venv`` (``make setup``), else the running one.
VENV = REPO / ".venv" if (REPO / ".venv").is_dir() else Path(sys.prefix)

# ------------------------------------------------------------------------------------------------
# What the README's placeholders stand for (the only text of a command that is replaced)
# ------------------------------------------------------------------------------------------------

#: README text -> what the executor puts there (paths are inside the scratch folder).
PLACEHOLDERS: dict[str, str] = {
    "/data/IJB_release/IJBC": "data/IJBC: ORL s1-s10 in insightface's IJB-C layout (meta/ + loose_crop/, MTCNN "
    "landmarks, 2 templates per subject, 1:N galleries G1/G2 and mixed probes)",
    "/data/lfw": "data/lfw: ORL s1-s10 (4 photos each) as an LFW tree of JPEGs (fetoolkit.data.export.write_lfw_tree)",
    "/data/pairs.txt": "data/pairs.txt: their subject-disjoint k-fold pairs, LFW pairs.txt format",
    "/data/agedb_30.bin": "data/agedb_30.bin: the same pairs as MTCNN-aligned JPEG crops, insightface .bin",
    "/data/faces": "data/faces: ORL s1-s8, 5 photos each, one folder per identity",
    "/data/pairs.csv": "data/pairs.csv: path1,path2,label,fold over data/faces (k-fold pairs)",
    "/data/RFW": "data/RFW: ORL s1-s20 (group GA) and s21-s40 (GB) as JPEG, RFW layout, 10 sets per list",
    "/data/distractors": "data/distractors: ORL s31-s40, 2 photos each, one flat folder",
    "/data/photos": "data/photos: the four wild photos and ORL s31-s33 photos 1-2 as JPEG",
    "/shared/stores/photos": "shared/stores/photos (the Ray recipe's store)",
    "/shared/photos": "shared/photos: a copy of data/photos (the Ray recipe's shared images)",
    "/path/MobileFaceNet.tflite": "the fetched, sha256-checked sirius MobileFaceNet .tflite",
    "/tmp/run1": "run1 (the scratch folder's; the user's choice of folder)",
    "/tmp/threshold_tuning.ipynb": "threshold_tuning.ipynb (in the scratch folder)",
    "outputs/eval/RUN": "the run of the README's first ORL eval (backend=onnx)",
    "outputs/eval/OTHER_RUN": "the run of the README's dataset=lfw eval (another data set)",
    "outputs/eval/...": "the run of the README's first ORL eval (backend=onnx)",
    "DIR": "stores/photos (the images=/data/photos store); in the engine=ray command stores/orl-ray",
    "HEAD_IP": "127.0.0.1 (the second node runs on the head's host)",
    "<date>/<time>": "globbed (newest match) among the folders the earlier commands wrote",
}

#: Files a command names in the current folder, written before it runs (documented formats).
INPUT_FILES: dict[str, str] = {
    "scores.txt": "bob 4-column scores of the ORL run (fetoolkit.data.export.export_scores)",
    "dev.txt": "bob scores of that run's k-fold comparisons of folds 1-5",
    "eval.txt": "... and of folds 6-10",
    "groups.csv": "subject,gender,age_band over ORL's 40 subjects (made-up stand-in attributes)",
    "a.jpg": "obama.jpg of the wild photos",
    "b.jpg": "obama2.jpg of the wild photos",
}

# ------------------------------------------------------------------------------------------------
# What is not executed, and why
# ------------------------------------------------------------------------------------------------

#: README command -> why this test does not execute it.
EXCLUDED: dict[str, str] = {
    "make eval": ".ci/run runs it on every submission, on a fresh clone",
    "make test": ".ci/run runs it on every submission, on a fresh clone (and it would run this test)",
    "make gate": ".ci/run runs it after the tests on every submission",
    'make gate-update REASON="why the baselines move"': "rewrites the committed baselines in the checkout",
    "make bench": "the benchmark target (5-8 minutes on 2 cores); it writes bench*.json into the checkout",
    ".venv/bin/python -m fetoolkit.bench_detect --out bench_detect.json": "a benchmark (about 2 minutes): "
    "its exit status follows speed targets that the load of a shared machine moves; part of make bench",
    ".venv/bin/python -m fetoolkit.gate +perturb=no_align": "reruns all five baseline evals perturbed: 235 s "
    "here, as written (exit 1, FAIL rows, as documented); tests/test_gate.py::test_perturbation_fails_with_table "
    "runs this job with both perturbations on the arcface baseline in the default suite",
    ".venv/bin/python -m fetoolkit.gate +perturb=bgr": "241 s here as written (exit 1, as documented); "
    "see the no_align row",
    "make notebooks": "runs in the checkout; the same jupyter-execute of every notebook is "
    "tests/test_notebooks.py::test_executes, and the notebook command below runs here",
    "PROFILE_PATH=outputs/eval/RUN/profile.json .venv/bin/python -m fetoolkit.serve model=arcface": (
        "tests/test_serve_profile.py starts the real service with PROFILE_PATH on a profile of the README's "
        "detector=yunet backend=onnx ORL eval (the service's detector and backend) and checks /api/verify's llr"
    ),
    "docker build -t fetoolkit-serve .": "no Docker engine here: `docker ps` -> Cannot connect to the Docker daemon",
    "docker run --rm -p 8002:8002 fetoolkit-serve": "no Docker engine (and no image built)",
    "docker run --rm -p 8002:8002 -e MAX_CONCURRENT_REQUESTS=32 fetoolkit-serve inference.workers=4": (
        "no Docker engine"
    ),
    "docker run --rm -p 8002:8002 -v $PWD/models:/models -e MODEL_PATH=/models/MobileFaceNet.tflite fetoolkit-serve": (
        "no Docker engine"
    ),
}


def quick_commands(commands: list[str]) -> list[str]:
    """Commands tests/test_readme.py::test_quick_commands_run_as_written executes (same selection)."""
    return [c for c in commands if re.search(r"python -m fetoolkit\.(verify|embed) ", c) and "outputs/" not in c]


def curl_commands(commands: list[str]) -> list[str]:
    """Commands tests/test_serve.py::test_readme_curl_examples_run_as_written executes."""
    return [c for c in commands if "curl " in c]


# ------------------------------------------------------------------------------------------------
# The executor
# ------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One executed command: its process and the run folders it made (outputs/, multirun/)."""

    command: str
    proc: subprocess.CompletedProcess[str]
    runs: list[Path] = field(default_factory=list)


class Workspace:
    """The scratch folder every command runs in, its data, and the commands run so far."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done: dict[str, Outcome] = {}
        self.values: dict[str, Callable[[str], str]] = {}
        (root / ".venv").symlink_to(VENV)
        shutil.copytree(REPO / "notebooks", root / "notebooks")  # the checkout's files the notebook command names
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PATH": f"{root / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(root / ".venv"),
        }

    # placeholders ------------------------------------------------------------------------------
    def substitute(self, line: str) -> str:
        """``line`` with every placeholder replaced in one pass (longest first); '<date>/<time>' globbed."""
        left = [k for k in PLACEHOLDERS if k in line and k not in self.values and k != "<date>/<time>"]
        assert not left, f"placeholders without a value in {line!r}: {left}"
        keys = sorted(self.values, key=len, reverse=True)
        pattern = "|".join(rf"(?<![\w/]){re.escape(k)}(?!\w)" if k.isupper() else re.escape(k) for k in keys)
        out = re.sub(pattern, lambda m: self.values[m.group(0)](line), line)
        # a folder written earlier, '$PWD/' (the shell's own) left to bash
        return re.sub(
            r"(?:\$PWD/)?([\w./-]*<date>/<time>[\w.-]*)",
            lambda m: m.group(0).replace(m.group(1), self.glob_newest(m.group(1))),
            out,
        )

    def glob_newest(self, text: str) -> str:
        """The newest folder matching ``text`` with ``<date>``/``<time>`` as wildcards (relative)."""
        matches = sorted(self.root.glob(text.replace("<date>", "*").replace("<time>", "*")))
        matches = [m for m in matches if m.is_dir()]
        assert matches, f"README path {text!r} matches no folder the earlier commands wrote"
        return str(matches[-1].relative_to(self.root))

    # running -----------------------------------------------------------------------------------
    def _run_dirs(self) -> set[Path]:
        found = set(self.root.glob("outputs/*/*/*")) | set(self.root.glob("multirun/*/*/*/*"))
        return {p for p in found if p.is_dir()}

    def run(self, command: str, *, rc: int = 0, timeout: float = 900) -> Outcome:
        """Run a README command once (later calls return the first outcome) and check its exit status."""
        assert command in COMMANDS, f"not a README command (any more?): {command!r}"
        if command in self.done:
            return self.done[command]
        for name, writer in INPUT_WRITERS.items():
            if re.search(rf"(?<![\w/.]){re.escape(name)}(?![\w.])", command) and not (self.root / name).exists():
                writer(self)
        line = self.substitute(command)
        before = self._run_dirs()
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["bash", "-c", line], capture_output=True, text=True, cwd=self.root, env=self.env, timeout=timeout
        )
        log.info("%.1f s, rc %d: %s", time.perf_counter() - t0, proc.returncode, line)
        assert proc.returncode == rc, (line, proc.returncode, proc.stdout[-3000:], proc.stderr[-5000:])
        out = Outcome(command, proc, sorted(self._run_dirs() - before))
        self.done[command] = out
        return out

    def run_of(self, command: str) -> str:
        """The one run folder (relative) ``command`` wrote."""
        runs = [r for r in self.run(command).runs if (r / "results.json").is_file()]
        assert len(runs) == 1, (command, runs)
        return str(runs[0].relative_to(self.root))


# ------------------------------------------------------------------------------------------------
# The data behind the placeholders: real ORL faces in the published layouts
# ------------------------------------------------------------------------------------------------


def _orl_subset(subjects: range, photos: range):
    """ORL's images of ``subjects`` (1-based) and ``photos`` (1-based), as an IdentityDataset."""
    from fetoolkit.data.sources import IdentityDataset, load_orl

    orl = load_orl()
    by_name = {(p.parent.name, int(p.stem)): p for p in orl.paths}
    names = [f"s{s}" for s in subjects]
    paths = [by_name[(n, k)] for n in names for k in photos]
    return IdentityDataset("orl", paths, np.repeat(np.arange(len(names)), len(photos)), names)


def _aligned(paths: list[Path]):
    from fetoolkit.detect.mtcnn import MTCNNDetector
    from fetoolkit.pipeline import PipelineCfg, crop_images

    crops = crop_images(paths, MTCNNDetector(), PipelineCfg(progress=False))
    assert crops.ok.all(), crops.failures
    return crops


def write_lfw_and_bin(data: Path) -> None:
    """``data/lfw`` + ``data/pairs.txt`` and ``data/agedb_30.bin`` from ORL s1-s10 (the same pairs)."""
    from fetoolkit.data.export import write_aligned_bin, write_lfw_tree
    from fetoolkit.data.protocols import kfold_pairs

    ds = _orl_subset(range(1, 11), range(1, 5))
    pairs = kfold_pairs(ds.identities, n_folds=5, seed=0)
    write_lfw_tree(ds.paths, ds.identities, ds.names, pairs, data)
    write_aligned_bin(_aligned(ds.paths).faces, pairs, data / "agedb_30.bin")


def write_faces_and_csv(data: Path) -> None:
    """``data/faces/<sK>/<n>.pgm`` (ORL s1-s8, photos 1-5) and ``data/pairs.csv`` over them."""
    from fetoolkit.data.protocols import kfold_pairs

    ds = _orl_subset(range(1, 9), range(1, 6))
    rel = []
    for p in ds.paths:
        target = data / "faces" / p.parent.name / p.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, target)
        rel.append(str(target.relative_to(data)))
    pairs = kfold_pairs(ds.identities, n_folds=4, seed=0)
    with open(data / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path1", "path2", "label", "fold"])
        for a, b, y, k in zip(pairs.idx_a, pairs.idx_b, pairs.labels, pairs.folds):
            w.writerow([rel[a], rel[b], int(y), int(k)])


def write_distractors_and_photos(data: Path, shared: Path) -> None:
    """``data/distractors`` (ORL s31-s40, photos 1-2), ``data/photos`` (the wild photos + ORL s31-s33
    as JPEG) and its copy ``shared/photos``."""
    from fetoolkit.data.export import encode_jpeg
    from fetoolkit.data.wild import load_wild
    from fetoolkit.imageio import read_image

    (data / "distractors").mkdir(parents=True)
    for p in _orl_subset(range(31, 41), range(1, 3)).paths:
        shutil.copy(p, data / "distractors" / f"{p.parent.name}_{p.name}")
    (data / "photos").mkdir()
    for name, src in load_wild().items():
        shutil.copy(src, data / "photos" / name)
    for p in _orl_subset(range(31, 34), range(1, 3)).paths:
        (data / "photos" / f"{p.parent.name}_{p.stem}.jpg").write_bytes(encode_jpeg(read_image(p)))
    shared.mkdir(parents=True)
    shutil.copytree(data / "photos", shared / "photos")


def write_rfw(root: Path) -> None:
    """An RFW root: ``txts/<G>/<G>_pairs.txt`` + ``data/<G>/<Name>/<Name>_<NNNN>.jpg``, groups GA
    (ORL s1-s20) and GB (s21-s40), all 10 photos; GB's list without the LFW header, as RFW's own."""
    from fetoolkit.data.export import write_lfw_tree
    from fetoolkit.data.protocols import kfold_pairs

    for g, subjects in (("GA", range(1, 21)), ("GB", range(21, 41))):
        ds = _orl_subset(subjects, range(1, 11))  # 900 impostors a group: FAR=1e-3 is measurable
        tmp = root / "tmp" / g
        img_root, pairs_txt = write_lfw_tree(
            ds.paths, ds.identities, ds.names, kfold_pairs(ds.identities, n_folds=10, seed=0), tmp
        )  # 10 sets: a list without a header is read as RFW's 10
        (root / "data").mkdir(parents=True, exist_ok=True)
        img_root.rename(root / "data" / g)
        (root / "txts" / g).mkdir(parents=True)
        lines = pairs_txt.read_text().splitlines()
        (root / "txts" / g / f"{g}_pairs.txt").write_text("\n".join(lines[1:] if g == "GB" else lines) + "\n")
    shutil.rmtree(root / "tmp")


def write_ijbc(root: Path) -> None:
    """ORL s1-s10 in insightface's IJB-C layout: template 2s (photos 1-5) and 2s+1 (6-10) per
    subject, media as photo pairs, MTCNN's landmarks and scores in the 5-point file; every template
    pair; 1:N galleries G1 (s1-s5's first templates), G2 (s6-s10's) and the second templates as probes."""
    from PIL import Image

    ds = _orl_subset(range(1, 11), range(1, 11))
    crops = _aligned(ds.paths)
    (root / "loose_crop").mkdir(parents=True)
    (root / "meta").mkdir()
    tid_mid, pts, sides = [], [], {"G1": [], "G2": [], "probe": []}
    subject_of = {}
    for i, p in enumerate(ds.paths):
        s, n = int(ds.identities[i]), int(p.stem) - 1
        tid, name = 2 * s + (n >= 5), f"{s + 1}_{n + 1}.png"
        subject_of[tid] = 100 + s
        Image.open(p).save(root / "loose_crop" / name)  # lossless: ORL's own pixels
        tid_mid.append(f"{name} {tid} {10 * tid + (n % 5) // 2}")
        lm = " ".join(f"{v:.9g}" for v in crops.landmarks[i].reshape(-1))
        pts.append(f"{name} {lm} {float(crops.det_scores[i]):.9g}")
        side = "probe" if n >= 5 else ("G1" if s < 5 else "G2")
        sides[side].append(f"{tid},{100 + s},{name}")
    (root / "meta/ijbc_face_tid_mid.txt").write_text("\n".join(tid_mid) + "\n")
    (root / "meta/ijbc_name_5pts_score.txt").write_text("\n".join(pts) + "\n")
    tids = sorted(subject_of)
    pair_lines = [f"{a} {b} {int(subject_of[a] == subject_of[b])}" for i, a in enumerate(tids) for b in tids[i + 1 :]]
    (root / "meta/ijbc_template_pair_label.txt").write_text("\n".join(pair_lines) + "\n")
    for side, rows in sides.items():
        fname = "ijbc_1N_probe_mixed.csv" if side == "probe" else f"ijbc_1N_gallery_{side}.csv"
        (root / "meta" / fname).write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n" + "\n".join(rows) + "\n")


def _write_scores(ws: Workspace) -> None:
    from fetoolkit.data.export import export_scores

    run = ws.root / ws.values["outputs/eval/RUN"]("")
    export_scores(run, ws.root / "scores.txt")
    export_scores(run, ws.root / "dev.txt", folds="1-5")
    export_scores(run, ws.root / "eval.txt", folds="6-10")


def _write_groups(ws: Workspace) -> None:
    rows = ["subject,gender,age_band"] + [
        f"s{k},{'f' if k % 2 else 'm'},{'young' if k <= 20 else 'old'}" for k in range(1, 41)
    ]
    (ws.root / "groups.csv").write_text("\n".join(rows) + "\n")


def _write_ab(ws: Workspace) -> None:
    from fetoolkit.data.wild import load_wild

    wild = load_wild()
    shutil.copy(wild["obama.jpg"], ws.root / "a.jpg")
    shutil.copy(wild["obama2.jpg"], ws.root / "b.jpg")


INPUT_WRITERS: dict[str, Callable[[Workspace], None]] = {
    "scores.txt": _write_scores,
    "dev.txt": _write_scores,
    "eval.txt": _write_scores,
    "groups.csv": _write_groups,
    "a.jpg": _write_ab,
    "b.jpg": _write_ab,
}

# The README commands other commands' placeholders point at.
ORL_ONNX = ".venv/bin/python -m fetoolkit.eval model=arcface dataset=orl backend=onnx"
LFW = ".venv/bin/python -m fetoolkit.eval dataset=lfw dataset.root=/data/lfw dataset.pairs=/data/pairs.txt"
SWEEP = ".venv/bin/python -m fetoolkit.eval -m model=arcface,mobilefacenet512 backend=torch,onnx"
PHOTOS_STORE = "python -m fetoolkit.extract model=arcface images=/data/photos store=DIR workers=8 shard_size=1000"
RAY_LOCAL = "python -m fetoolkit.extract model=arcface dataset=orl store=DIR engine=ray"
ORL_STORE = "python -m fetoolkit.extract model=arcface dataset=orl store=stores/orl-arcface"


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The scratch folder with every placeholder's data written."""
    from fetoolkit.hub import fetch_weights
    from fetoolkit.models.registry import get_model_spec

    t0 = time.perf_counter()
    w = Workspace(tmp_path_factory.mktemp("readme"))
    data = w.root / "data"
    data.mkdir()
    write_lfw_and_bin(data)
    write_faces_and_csv(data)
    write_distractors_and_photos(data, w.root / "shared")
    write_rfw(data / "RFW")
    write_ijbc(data / "IJBC")
    spec = get_model_spec("arcface")
    assert spec.weights is not None
    tflite = fetch_weights(spec.weights, what=spec.name, key_hint="")
    fixed = {
        "/data/IJB_release/IJBC": "data/IJBC",
        "/data/lfw": "data/lfw",
        "/data/pairs.txt": "data/pairs.txt",
        "/data/agedb_30.bin": "data/agedb_30.bin",
        "/data/faces": "data/faces",
        "/data/pairs.csv": "data/pairs.csv",
        "/data/RFW": "data/RFW",
        "/data/distractors": "data/distractors",
        "/data/photos": "data/photos",
        "/shared/stores/photos": str(w.root / "shared" / "stores" / "photos"),
        "/shared/photos": str(w.root / "shared" / "photos"),
        "/path/MobileFaceNet.tflite": str(tflite),
        "/tmp/run1": str(w.root / "run1"),
        "/tmp/threshold_tuning.ipynb": str(w.root / "threshold_tuning.ipynb"),
        "HEAD_IP": "127.0.0.1",
    }
    w.values = {k: (lambda _line, v=v: v) for k, v in fixed.items()}
    w.values["outputs/eval/RUN"] = lambda _line: w.run_of(ORL_ONNX)
    w.values["outputs/eval/..."] = lambda _line: w.run_of(ORL_ONNX)
    w.values["outputs/eval/OTHER_RUN"] = lambda _line: w.run_of(LFW)
    w.values["DIR"] = lambda line: "stores/orl-ray" if "engine=ray" in line else "stores/photos"
    assert set(w.values) | {"<date>/<time>"} == set(PLACEHOLDERS)
    log.info("README workspace written in %.1f s: %s", time.perf_counter() - t0, w.root)
    return w


# ------------------------------------------------------------------------------------------------
# Checks of what the commands produced
# ------------------------------------------------------------------------------------------------


def results(run: Path) -> dict:
    """A finished run's results.json (complete, schema 2)."""
    r = json.loads((run / "results.json").read_text())
    assert r["complete"] is True and r["schema_version"] == 2, run
    return r


def one_result(out: Outcome) -> dict:
    runs = [r for r in out.runs if (r / "results.json").is_file()]
    assert len(runs) == 1, (out.command, out.runs)
    return results(runs[0])


def plausible(r: dict, *, eer: float = 0.1) -> None:
    """Real faces, a working model: an EER below ``eer`` and no failure to enrol."""
    assert r["fte"] == 0 and 0.0 <= r["eer"] < eer, (r["dataset"], r["fte"], r["eer"])


def store_rows(store: Path):
    """A finished store's rows (manifest complete, n_done == n_images), sorted by image sha256."""
    import pandas as pd

    from fetoolkit.store import read_manifest

    m = read_manifest(store)
    assert m["complete"] and m["n_done"] == m["n_images"] > 0, m
    rows = pd.concat([pd.read_parquet(p) for p in sorted(store.glob("shard-*.parquet"))], ignore_index=True)
    assert len(rows) == m["n_images"]
    return rows.sort_values("image_sha256").reset_index(drop=True)


def check_eval(ws: Workspace, command: str) -> None:
    """What each eval-family command of the README must leave behind."""
    out = ws.run(command)
    if "fetoolkit.eval -m " in command:  # a sweep: every run finished, one comparison table
        runs = [r for r in out.runs if (r / "results.json").is_file()]
        n = 4 if "mobilefacenet512" in command else 8
        assert len(runs) == n, runs
        for r in runs:
            plausible(results(r))
        assert (runs[0].parent / "comparison.md").is_file()
        return
    r = one_result(out) if "hydra.run.dir" not in command else results(ws.root / "run1")
    if "dataset=ijbc" in command:
        assert r["comparison"]["unit"] == "template" and "kfold" not in r
        assert set(r["identification"]) >= {"G1", "G2", "mean"}
        plausible(r)
    elif "dataset=scores" in command:
        assert 0.0 <= r["eer"] < 0.05
        if "dataset.dev" in command:
            assert r["dev_eval"]["criterion"] == "min_hter" and 0.0 <= r["dev_eval"]["eval"]["hter"] < 0.05
    elif "identification." in command:
        plausible(r)
        ident = r["identification"]
        text = json.dumps(ident)
        assert "rank1" in text and ident, ident
    elif "groups=" in command or "dataset=rfw" in command:
        plausible(r)
        attrs = r["groups"]["attributes"]
        if "groups=" in command:
            assert set(attrs) == {"gender", "age_band"} and set(attrs["gender"]) == {"f", "m"}, attrs
        else:  # RFW: the images carry their group
            assert any(set(v) == {"GA", "GB"} for v in attrs.values()), attrs
    else:
        plausible(r)
    if "pipeline.align=false" in command:
        assert r["pipeline"]["align"] is False
    if "detector=yunet" in command:
        assert r["detector"]["name"] == "yunet"
    if "flip_test=true" in command:
        assert r["comparison"]["flip_test"] is True
    if "threshold.dev=" in command:  # the LFW run's 60 impostors cannot place FAR=1e-3: no threshold, the reason
        op = r["operating_point"]
        assert op["threshold_from"] == "dev" and (op["threshold"] is not None or "60 impostor" in op["reason"]), op
    if "model.weights=" in command:
        assert r["eer"] == pytest.approx(results(ws.root / ws.run_of(ORL_ONNX))["eer"], abs=0.01)


EVAL_COMMANDS = [
    ".venv/bin/python -m fetoolkit.eval model=arcface dataset=orl backend=onnx",
    ".venv/bin/python -m fetoolkit.eval pipeline.align=false",
    ".venv/bin/python -m fetoolkit.eval model.weights=/path/MobileFaceNet.tflite",
    ".venv/bin/python -m fetoolkit.eval hydra.run.dir=/tmp/run1",
    ".venv/bin/python -m fetoolkit.eval num_threads=1 fte_policy=fail",
    ".venv/bin/python -m fetoolkit.eval dataset=lfw dataset.root=/data/lfw dataset.pairs=/data/pairs.txt",
    ".venv/bin/python -m fetoolkit.eval dataset=bin dataset.path=/data/agedb_30.bin",
    ".venv/bin/python -m fetoolkit.eval dataset=folder dataset.root=/data/faces",
    ".venv/bin/python -m fetoolkit.eval dataset=csv dataset.path=/data/pairs.csv",
    ".venv/bin/python -m fetoolkit.eval -m model=arcface,mobilefacenet512 backend=torch,onnx",
    ".venv/bin/python -m fetoolkit.eval model=arcface dataset=ijbc dataset.root=/data/IJB_release/IJBC",
    ".venv/bin/python -m fetoolkit.eval -m dataset=ijbc dataset.root=/data/IJB_release/IJBC  "
    "pipeline.flip_test=true,false dataset.normalize_images=true,false dataset.faceness_weight=true,false",
    ".venv/bin/python -m fetoolkit.eval dataset=orl pipeline.flip_test=true",
    ".venv/bin/python -m fetoolkit.eval dataset=orl identification.gallery_per_subject=3",
    ".venv/bin/python -m fetoolkit.eval dataset=folder dataset.root=/data/faces  "
    "identification.gallery_per_subject=1 identification.distractors=/data/distractors",
    ".venv/bin/python -m fetoolkit.eval dataset=scores dataset.path=scores.txt",
    ".venv/bin/python -m fetoolkit.eval dataset=scores dataset.dev=dev.txt dataset.eval=eval.txt "
    "threshold.criterion=min_hter",
    ".venv/bin/python -m fetoolkit.eval model=arcface dataset=orl threshold.dev=outputs/eval/OTHER_RUN",
    ".venv/bin/python -m fetoolkit.eval model=arcface dataset=orl groups=groups.csv",
    ".venv/bin/python -m fetoolkit.eval model=arcface dataset=rfw dataset.root=/data/RFW",
    ".venv/bin/python -m fetoolkit.eval model=arcface dataset=orl detector=yunet",
    ".venv/bin/python -m fetoolkit.eval model=arcface dataset=orl detector=yunet backend=onnx",
    ".venv/bin/python -m fetoolkit.eval model=arcface dataset=orl calibration.method=isotonic calibration.prior=0.5",
]
COMPARE = ".venv/bin/python -m fetoolkit.compare multirun/eval/<date>/<time>"
BOB_EXPORT = ".venv/bin/python -m fetoolkit.data.export --scores outputs/eval/RUN --bob orl.txt"
VERIFY_RUN = ".venv/bin/python -m fetoolkit.verify a.jpg b.jpg run=outputs/eval/... far=1e-3 json=true"
VERIFY_PROFILE = ".venv/bin/python -m fetoolkit.verify a.jpg b.jpg profile=outputs/eval/.../profile.json fmr=1e-3"
NOTEBOOK = (
    "RUN_DIR=$PWD/outputs/eval/<date>/<time>-arcface_mbf.sirius-torch-orl "
    "SECOND_RUN=$PWD/outputs/eval/<date>/<time>-arcface_mbf.sirius-torch-folder  "
    ".venv/bin/jupyter-execute notebooks/threshold_tuning.ipynb --output=/tmp/threshold_tuning.ipynb"
)
EXPORT_COMMANDS = [
    ".venv/bin/python -m fetoolkit.export model=arcface",
    ".venv/bin/python -m fetoolkit.export model=mobilefacenet512 precision=int8",
    ".venv/bin/python -m fetoolkit.parity model=arcface",
    ".venv/bin/python -m fetoolkit.parity model=mobilefacenet512 precision=fp16",
]
EXTRACT_COMMANDS = [ORL_STORE, PHOTOS_STORE, RAY_LOCAL]
STORE_EVAL = "python -m fetoolkit.eval model=arcface dataset=orl store=stores/orl-arcface"
STORE_GALLERY = (
    "python -m fetoolkit.eval dataset=folder dataset.root=/data/faces identification.gallery_per_subject=1  "
    "identification.distractors=DIR"
)
RAY_RECIPE = [
    "ray start --head --port=6379",
    "RAY_AUTH_MODE=token ray start --address=HEAD_IP:6379",
    "python -m fetoolkit.extract model=arcface images=/shared/photos store=/shared/stores/photos  "
    "engine=ray ray.address=auto",
]
SERVE_COMMANDS = {  # command -> the port it listens on
    ".venv/bin/python -m fetoolkit.serve model=arcface detector=mtcnn": 8002,
    ".venv/bin/python -m fetoolkit.serve model=arcface": 8002,
    "PORT=9000 MAX_CONCURRENT_REQUESTS=32 .venv/bin/python -m fetoolkit.serve model=arcface face_select=largest": 9000,
    "API_KEYS=k1,k2 .venv/bin/python -m fetoolkit.serve model=arcface": 8002,
}

#: Every README command the slow tests of this file execute.
EXECUTED = [
    *EVAL_COMMANDS,
    COMPARE,
    BOB_EXPORT,
    VERIFY_RUN,
    VERIFY_PROFILE,
    NOTEBOOK,
    *EXPORT_COMMANDS,
    *EXTRACT_COMMANDS,
    STORE_EVAL,
    STORE_GALLERY,
    *RAY_RECIPE,
    *SERVE_COMMANDS,
]


def unclassified(commands: list[str]) -> list[str]:
    """README commands neither executed (here, by the quick test, by the curl test) nor excluded."""
    known = set(EXECUTED) | set(EXCLUDED) | set(quick_commands(commands)) | set(curl_commands(commands))
    return [c for c in commands if c not in known]


# ------------------------------------------------------------------------------------------------
# Default suite: every README command is classified
# ------------------------------------------------------------------------------------------------


def test_every_readme_command_is_classified() -> None:
    """A new README command must be executed by a test or excluded here with its reason."""
    missing = unclassified(COMMANDS)
    assert not missing, f"README commands neither executed by a test nor in EXCLUDED: {missing}"
    stale = [c for c in [*EXECUTED, *EXCLUDED] if c not in COMMANDS]
    assert not stale, f"commands classified here that the README no longer has: {stale}"
    assert len(set(EXECUTED)) == len(EXECUTED) and not set(EXECUTED) & set(EXCLUDED)


def test_an_unclassified_command_is_caught() -> None:
    new = ".venv/bin/python -m fetoolkit.eval dataset=new_one"
    assert unclassified([*COMMANDS, new]) == [new]


def test_every_placeholder_is_documented() -> None:
    """Each /data/..., /shared/..., /path/... of an executed command has a row in PLACEHOLDERS."""
    named = {m for c in EXECUTED for m in re.findall(r"/(?:data|shared|path)/[\w./-]+", c)}
    assert named <= set(PLACEHOLDERS), sorted(named - set(PLACEHOLDERS))


# ------------------------------------------------------------------------------------------------
# Slow: the commands, executed
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_readme_eval_commands_run_as_written(ws: Workspace) -> None:
    """The eval commands (every data set layout, sweeps, scores, groups), compare, the bob export,
    verify against a run, and the notebook on two runs."""
    for command in EVAL_COMMANDS:
        check_eval(ws, command)
        if command == SWEEP:
            out = ws.run(COMPARE)
            sweep = ws.root / ws.glob_newest("multirun/eval/<date>/<time>")
            assert (sweep / "comparison.csv").is_file() and "mobilefacenet512" in (sweep / "comparison.md").read_text()
            assert out.proc.stdout or out.proc.stderr
    ws.run(BOB_EXPORT)
    lines = (ws.root / "orl.txt").read_text().split("\n")
    assert len([x for x in lines if x.strip()]) == 1800 + 78000 and len(lines[0].split()) == 4
    answer = json.loads(ws.run(VERIFY_RUN).proc.stdout)
    assert answer["same_person"] is True, answer
    said = ws.run(VERIFY_PROFILE).proc.stdout
    assert "same person" in said and "log-likelihood ratio" in said and "p(same person)" in said, said
    ws.run(NOTEBOOK, timeout=900)
    executed = json.loads((ws.root / "threshold_tuning.ipynb").read_text())
    images = sum(1 for c in executed["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    text = json.dumps(executed["cells"])
    assert images >= 2 and "folder" in text, "the notebook did not follow the two runs"


@pytest.mark.slow
def test_readme_export_and_parity_commands_run_as_written(ws: Workspace) -> None:
    import onnx

    for command in EXPORT_COMMANDS:
        out = ws.run(command)
        report = [r for r in out.runs if list(r.glob("*.json"))]
        assert report, (command, out.runs)
    for name in ("arcface_mbf.sirius.onnx", "mobilefacenet512.int8.onnx"):
        onnx.checker.check_model(str(ws.root / "models" / name))
    parity = [json.loads(p.read_text()) for p in ws.root.glob("outputs/parity/*/*/parity.json")]
    assert len(parity) == 2, parity


@pytest.mark.slow
def test_readme_extract_commands_run_as_written(ws: Workspace) -> None:
    """The local and local-Ray extractions, the eval from a store and a store as distractors."""
    for command in EXTRACT_COMMANDS:
        ws.run(command)
    orl, ray_local = store_rows(ws.root / "stores/orl-arcface"), store_rows(ws.root / "stores/orl-ray")
    assert len(orl) == 400 and orl["ok"].all()
    assert_same_embeddings(orl, ray_local)
    photos = store_rows(ws.root / "stores/photos")
    assert len(photos) == len(list((ws.root / "data/photos").iterdir())) and photos["ok"].all()
    r = one_result(ws.run(STORE_EVAL))
    plausible(r, eer=0.02)
    assert "store" in json.dumps(r["embeddings_source"]), r["embeddings_source"]
    r = one_result(ws.run(STORE_GALLERY))
    assert "rank1" in json.dumps(r["identification"]) and "distractor" in json.dumps(r["identification"])


def assert_same_embeddings(a, b) -> None:
    """Two stores of the same images: the same rows, embeddings at cosine >= 0.99999."""
    assert list(a["image_sha256"]) == list(b["image_sha256"])
    x, y = np.stack(a["embedding"].to_numpy()), np.stack(b["embedding"].to_numpy())
    cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    assert cos.min() >= 0.99999, cos.min()


def _ray_running(env: dict[str, str]) -> bool:
    token = {**env, "RAY_AUTH_MODE": "token"}  # a Ray 2.60 head answers `ray status` only with its token
    return subprocess.run(["ray", "status"], capture_output=True, env=token, timeout=60).returncode == 0


@pytest.mark.slow
def test_readme_ray_cluster_recipe_runs_as_written(ws: Workspace) -> None:
    """The cluster recipe: a head, a second node on the same host, the extraction with
    ray.address=auto; its store equals the engine=local store of the same images."""
    if _ray_running(ws.env):
        pytest.skip("a Ray cluster is already running on this host (not ours to stop)")
    try:
        head = ws.run(RAY_RECIPE[0], timeout=300)
        log.info("ray head: %s", head.proc.stdout[-500:])
        ws.run(RAY_RECIPE[1], timeout=300)
        nodes = subprocess.run(
            ["python", "-c", "import ray; ray.init(address='auto'); print(sum(n['Alive'] for n in ray.nodes()))"],
            capture_output=True, text=True, env=ws.env, cwd=ws.root, timeout=120,
        )  # fmt: skip
        log.info("alive Ray nodes: %s", nodes.stdout.strip())
        assert nodes.stdout.strip().splitlines()[-1] == "2", (nodes.stdout, nodes.stderr[-2000:])
        ws.run(RAY_RECIPE[2])
    finally:
        subprocess.run(["ray", "stop", "--force"], capture_output=True, env=ws.env, cwd=ws.root, timeout=120)
    ray_rows = store_rows(ws.root / "shared/stores/photos")
    ws.run(PHOTOS_STORE)  # the engine=local store of the same images (run by the extract test)
    local_rows = store_rows(ws.root / "stores/photos")
    assert_same_embeddings(local_rows, ray_rows)
    manifest = json.loads((ws.root / "shared/stores/photos/manifest.json").read_text())
    assert "ray" in json.dumps(manifest["runs"][-1]), manifest["runs"][-1]


@contextmanager
def serving(ws: Workspace, command: str, port: int) -> Iterator[dict]:
    """Start a README serve command with bash as written, yield its /api/health answer, stop it."""
    assert command in COMMANDS
    proc = subprocess.Popen(
        ["bash", "-c", ws.substitute(command)],
        cwd=ws.root,
        env=ws.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    t0 = time.perf_counter()
    try:
        answer = None
        while time.perf_counter() - t0 < 300 and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as r:
                    assert r.status == 200
                    answer = json.loads(r.read())
                    break
            except OSError:
                time.sleep(1)
        assert answer is not None, (command, proc.poll(), proc.stdout.read() if proc.poll() is not None else "")
        log.info("%.1f s to /api/health 200: %s", time.perf_counter() - t0, command)
        yield answer
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.slow
def test_readme_serve_commands_answer_health(ws: Workspace) -> None:
    """Each serve command as written, one at a time: /api/health answers 200 on its port."""
    for command, port in SERVE_COMMANDS.items():
        with serving(ws, command, port) as health:
            assert health["status"] == "healthy", health
