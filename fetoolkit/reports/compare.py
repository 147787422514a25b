"""Collect eval runs into one comparison table and one overlaid ROC plot.

    python -m fetoolkit.compare multirun/eval/2026-11-27/18-30-00        # a sweep folder
    python -m fetoolkit.compare RUN_DIR1 RUN_DIR2 --out reports/cmp      # any runs

Every ``results.json`` below the given folders is one row of ``comparison.md`` /
``comparison.csv``; the ROC curves are rebuilt from each run's pair table and overlaid in
``roc_overlay.png``. After a Hydra multirun of ``fetoolkit.eval`` the same happens
automatically (:class:`CompareCallback`, registered in ``configs/eval.yaml``).

Runs are grouped by data set: one table per data set, never one table mixing them (runs of
different data sets score different pairs, so their figures are not comparable pairwise). Within
a data set every run is compared with the first run (the reference, in folder order) on the pairs
both scored -- only when both pair tables hold the same ROC pair list (checked by a digest of the
pair columns): the paired bootstrap interval of the EER and TAR@1e-3 difference (the same subject
resamples for both runs where the pairs' subjects are known, see
:func:`fetoolkit.metrics.paired.paired_difference_ci`) and the exact McNemar test of the accept /
reject decisions at each run's own EER threshold and at each run's own FAR=1e-3 threshold. Those rows
are in ``comparison_paired.csv`` too.

Only finished runs are listed (each through :func:`fetoolkit.results.load_results`; the ones left out
are named with the reason), and nothing in a hidden folder (a run's staging folder, ``.hydra``).
The outputs are written whole: into a hidden staging folder, then renamed over the earlier ones,
``comparison.md`` last, so a failed or killed compare leaves the earlier comparison as it was,
never half a file (a failed write raises :class:`fetoolkit.results.WriteError`, naming the file).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fetoolkit.reports.tables import model_label
from fetoolkit.results import ResultsError, StagePath, WriteError, load_results, written_file

log = logging.getLogger(__name__)


def find_runs(roots: Sequence[str | Path]) -> list[Path]:
    """Folders holding a ``results.json``, below (or equal to) ``roots``, sorted; none inside a hidden
    folder below a root (a staging folder left by a killed run, Hydra's ``.hydra``)."""
    runs: set[Path] = set()
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"no such folder: {root}")
        for p in root.rglob("results.json"):
            if not any(part.startswith(".") for part in p.relative_to(root).parts[:-1]):
                runs.add(p.parent)
    return sorted(runs)


def collect(
    roots: Sequence[str | Path], out_dir: str | Path | None = None, *, overlay_all: bool = False
) -> dict[str, Path]:
    """Write ``comparison.md``, ``comparison.csv`` and ``roc_overlay.png`` for the runs below ``roots``.

    Runs of several data sets get one table and one ROC overlay each (``roc_overlay_<dataset>.png``)
    unless ``overlay_all`` asks for one overlay of every run.

    Args:
        roots: sweep or run folders.
        out_dir: where to write (default: the first root).
        overlay_all: overlay the ROC curves of different data sets in one plot anyway.

    Returns:
        ``{"markdown": path, "csv": path, "roc": path}``.

    Raises:
        FileNotFoundError: a root is missing or holds no ``results.json``.
        WriteError: an output could not be written (named); the earlier outputs are left as they were.
    """
    import pandas as pd

    from fetoolkit.metrics import verification as vm
    from fetoolkit.reports import plots, tables
    from fetoolkit.reports.paired import PAIRED_COLUMNS, paired_against_reference, paired_markdown

    runs: dict[Path, dict[str, Any]] = {}
    for run in find_runs(roots):
        try:
            runs[run] = load_results(run)
        except ResultsError as e:
            log.warning("%s; left out of the comparison", e)
    if not runs:
        raise FileNotFoundError(
            f"no complete results.json below {', '.join(map(str, roots))}: run "
            "`python -m fetoolkit.eval` (or a -m sweep) there first"
        )
    out = Path(out_dir) if out_dir is not None else Path(roots[0])
    out.mkdir(parents=True, exist_ok=True)
    results: list[tuple[str, dict[str, Any]]] = []
    curves: dict[str, dict[str, tuple[Any, Any]]] = {}  # data set -> label -> (far, tar)
    for run, s in runs.items():
        name = str(run.relative_to(out)) if run.is_relative_to(out) else str(run)
        results.append((name, s))
        pairs = run / s.get("pairs_file", "pairs.parquet")
        label = (
            f"{model_label(s)} / {s.get('backend')} / {s.get('dataset')} ({Path(name).name}): "
            f"EER {s.get('eer', float('nan')):.4f}"
        )
        if pairs.is_file():
            scores, labels = tables.roc_scores(tables.read_pairs(pairs))
            c = vm.roc_curve(scores, labels)
            curves.setdefault(str(s.get("dataset")), {})[label] = (c.far, c.tar)
        else:
            log.warning("%s has no pair table (%s); it is left out of the ROC overlay", run, pairs.name)
    df = tables.comparison_frame(results)
    df = df.sort_values(["dataset", "model", "backend"], kind="stable").reset_index(drop=True)
    paths = {
        "markdown": out / "comparison.md",
        "csv": out / "comparison.csv",
        "paired_csv": out / "comparison_paired.csv",
        "roc": out / "roc_overlay.png",
    }
    names = {run: name for run, (name, _) in zip(runs, results)}
    by_dataset: dict[str, list[Path]] = {}
    for run, s in runs.items():
        by_dataset.setdefault(str(s.get("dataset")), []).append(run)
    lines = [f"# Comparison of {len(df)} runs", "", "Intervals: 95% bootstrap (see each run's results.json)."]
    if len(by_dataset) > 1:
        lines += [
            "",
            f"These runs cover {len(by_dataset)} data sets ({', '.join(f'`{d}`' for d in sorted(by_dataset))}): "
            "one table per data set. Runs of different data sets score different pairs (other images, other "
            "subjects), so they cannot be compared pairwise: no paired test or difference interval across data sets.",
        ]
    paired_rows: list[dict[str, Any]] = []
    for dataset in sorted(by_dataset):
        group = by_dataset[dataset]
        part = df[df["dataset"].astype(str) == dataset]
        lines += [
            "",
            f"## {dataset}: {len(part)} run{'s' if len(part) != 1 else ''}",
            "",
            tables.comparison_markdown(part),
        ]
        if len(group) > 1:
            rows = paired_against_reference([(names[r], r, runs[r]) for r in group])
            paired_rows += rows
            lines += ["", *paired_markdown(rows)]
    one_overlay = len(curves) == 1 or bool(curves and overlay_all)
    if curves and not one_overlay:  # one overlay per data set: curves of other pairs are not comparable point by point
        del paths["roc"]
        for dataset in sorted(curves):
            safe = re.sub(r"[^\w.-]+", "_", dataset)
            paths[f"roc_{dataset}"] = out / f"roc_overlay_{safe}.png"
    stage = StagePath(tempfile.mkdtemp(dir=out, prefix=".comparison.writing-"))
    try:
        try:
            df.to_csv(stage / paths["csv"].name, index=False)
            pd.DataFrame(paired_rows, columns=list(PAIRED_COLUMNS)).to_csv(
                stage / paths["paired_csv"].name, index=False
            )
            if one_overlay:
                every = {k: v for part in curves.values() for k, v in part.items()}
                plots.plot_roc(every, stage / paths["roc"].name, title=f"ROC, {len(every)} runs")
            for dataset, part in sorted(curves.items()):
                if not one_overlay:
                    dest = stage / paths[f"roc_{dataset}"].name
                    plots.plot_roc(part, dest, title=f"ROC on {dataset}, {len(part)} runs")
            (stage / paths["markdown"].name).write_text("\n".join(lines) + "\n")
        except OSError as e:
            kept = f" (the earlier comparison in {out} was left as it was)"
            raise WriteError(written_file(e, stage, out), e, kept) from e
        for key in sorted(paths, key=lambda k: k == "markdown"):  # comparison.md, the command's output, last
            if not (stage / paths[key].name).exists():
                continue  # no ROC overlay without pair tables
            try:
                os.replace(stage / paths[key].name, paths[key])
            except OSError as e:
                raise WriteError(paths[key], e) from e
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log.info("compared %d runs: %s", len(df), ", ".join(str(p) for p in paths.values()))
    return paths


class CompareCallback(Callback):
    """Hydra callback: after a multirun, collect the sweep folder (see :func:`collect`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Say where the sweep writes before its first run (never into a folder silently)."""
        sweep = Path(config.hydra.sweep.dir).resolve()
        log.info("sweep folder: %s (hydra.sweep.dir=PATH writes elsewhere)", sweep)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        try:
            paths = collect([sweep])
        except (FileNotFoundError, WriteError) as e:
            log.warning("no comparison written: %s", e)
            return
        log.info("comparison table: %s", paths["markdown"])
