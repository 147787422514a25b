"""Collect eval runs into one comparison table and one overlaid ROC plot.

    python -m fetoolkit.compare multirun/eval/2026-11-27/18-30-00        # a sweep folder
    python -m fetoolkit.compare RUN_DIR1 RUN_DIR2 --out reports/cmp      # any runs

Every ``results.json`` below the given folders is one row of ``comparison.md`` /
``comparison.csv``; the ROC curves are rebuilt from each run's pair table and overlaid in
``roc_overlay.png``. After a Hydra multirun of ``fetoolkit.eval`` the same happens
automatically (:class:`CompareCallback`, registered in ``configs/eval.yaml``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fetoolkit.results import ResultsError, load_results

log = logging.getLogger(__name__)


def find_runs(roots: Sequence[str | Path]) -> list[Path]:
    """Folders holding a ``results.json``, below (or equal to) ``roots``, sorted."""
    runs: set[Path] = set()
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"no such folder: {root}")
        runs.update(p.parent for p in root.rglob("results.json"))
    return sorted(runs)


def collect(roots: Sequence[str | Path], out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``comparison.md``, ``comparison.csv`` and ``roc_overlay.png`` for the runs below ``roots``.

    Args:
        roots: sweep or run folders.
        out_dir: where to write (default: the first root).

    Returns:
        ``{"markdown": path, "csv": path, "roc": path}``.

    Raises:
        FileNotFoundError: a root is missing or holds no ``results.json``.
    """
    from fetoolkit.metrics import verification as vm
    from fetoolkit.reports import plots, tables

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
    curves = {}
    for run, s in runs.items():
        name = str(run.relative_to(out)) if run.is_relative_to(out) else str(run)
        results.append((name, s))
        pairs = run / s.get("pairs_file", "pairs.parquet")
        label = f"{s.get('model')} / {s.get('backend')} / {s.get('dataset')}: EER {s.get('eer', float('nan')):.4f}"
        if pairs.is_file():
            scores, labels = tables.roc_scores(tables.read_pairs(pairs))
            c = vm.roc_curve(scores, labels)
            curves[label] = (c.far, c.tar)
        else:
            log.warning("%s has no pair table (%s); it is left out of the ROC overlay", run, pairs.name)
    df = tables.comparison_frame(results)
    df = df.sort_values(["dataset", "model", "backend"], kind="stable").reset_index(drop=True)
    paths = {"markdown": out / "comparison.md", "csv": out / "comparison.csv", "roc": out / "roc_overlay.png"}
    df.to_csv(paths["csv"], index=False)
    paths["markdown"].write_text(
        f"# Comparison of {len(df)} runs\n\nIntervals: 95% bootstrap (see each run's results.json).\n\n"
        + tables.comparison_markdown(df)
        + "\n"
    )
    if curves:
        plots.plot_roc(curves, paths["roc"], title=f"ROC, {len(curves)} runs")
    log.info("compared %d runs: %s", len(df), ", ".join(str(p) for p in paths.values()))
    return paths


class CompareCallback(Callback):
    """Hydra callback: after a multirun, collect the sweep folder (see :func:`collect`)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        try:
            paths = collect([sweep])
        except FileNotFoundError as e:
            log.warning("no comparison written: %s", e)
            return
        log.info("comparison table: %s", paths["markdown"])
