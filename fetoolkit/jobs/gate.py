"""The accuracy regression gate: ``python -m fetoolkit.gate [HYDRA_OVERRIDES...]``.

Each ``eval/baselines/*.json`` names one gated evaluation (its Hydra overrides), the figures it
reached, the tolerances, and its pair-level decisions at the baseline threshold. The gate reruns
every evaluation (embeddings come from the on-disk cache when nothing changed), applies any
overrides given on the command line (``+perturb=no_align``), and fails when

* a figure got worse by more than its tolerance,
* McNemar's exact test on the pair decisions (same pairs, baseline threshold) says the change
  is significant and for the worse, or
* the embeddings of the four in-the-wild colour photos drifted from the baseline's (ORL is
  grey, so only colour photos can catch a colour-order change).

Beside McNemar, the difference of the half total error rate (mean of FMR and FNMR) between the
current and the baseline decisions is reported with its subject-bootstrap interval (the same
resampled subjects for both: :func:`fetoolkit.metrics.paired.decision_hter_difference`), for
information.

Before any figure, each run is checked to be what its baseline measured: the baseline's ``model``,
``backend``, ``weights_sha256`` and ``dataset`` against the run's, each difference a failed row
(a baseline of another model fails as such, not as a figure or a wild-photo cosine).

Improvements are reported and pass. ``--update --reason TEXT`` rewrites the baselines from the
current run and records the reason and date (``make gate-update REASON="..."``). It takes no
overrides: a baseline records its own overrides only, so ``--update +perturb=no_align`` would store
a perturbed pipeline's figures as the plain one's (and the real pipeline would then show as
"improved"); it is refused. To gate another set-up, add a baseline whose ``overrides`` name it.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir

from fetoolkit.metrics.paired import decision_hter_difference
from fetoolkit.metrics.significance import mcnemar
from fetoolkit.results import WriteError
from fetoolkit.run_dir import RunFolderError

log = logging.getLogger("fetoolkit.gate")

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
BASELINES = REPO / "eval" / "baselines"

#: figure -> (direction, default tolerance): +1 higher is better, -1 lower is better.
FIGURES: dict[str, tuple[int, float]] = {
    "accuracy_mean": (+1, 0.003),
    "eer": (-1, 0.003),
    "tar_at_far_1e-3": (+1, 0.01),
}
#: what a baseline measured, checked against each run before its figures (the summary's keys).
IDENTITY = ("model", "backend", "weights_sha256", "dataset")
DEFAULT_ALPHA = 0.01
DEFAULT_MIN_WILD_COSINE = 0.99


@dataclass(frozen=True)
class Row:
    """One line of the gate's table."""

    gate: str
    check: str
    baseline: str
    current: str
    limit: str
    status: str  # "ok", "improved", "FAIL"


def pack_bits(decisions: np.ndarray) -> tuple[str, str]:
    """bool ``[P]`` -> (base64 of the packed bits, sha256 hex of those bytes)."""
    raw = np.packbits(np.asarray(decisions, bool)).tobytes()
    return base64.b64encode(raw).decode("ascii"), hashlib.sha256(raw).hexdigest()


def unpack_bits(b64: str, n: int) -> np.ndarray:
    """Inverse of ``pack_bits``: bool ``[n]``."""
    return np.unpackbits(np.frombuffer(base64.b64decode(b64), np.uint8))[:n].astype(bool)


class BaselineError(ValueError):
    """A baseline file is unreadable, incomplete, out of range or inconsistent with itself."""


def validate_baseline(path: Path) -> dict[str, Any]:
    """Read one baseline and check everything the gate will rely on; returns it.

    Checked: valid JSON; ``name`` and ``overrides``; ``model``, ``backend``, ``dataset`` and
    ``weights_sha256`` (null for a model without weights); every gated figure present and in [0, 1]
    (or null); ``decisions``: a threshold in [-1, 1], ``n`` > 0, the bits decode to ``ceil(n/8)``
    bytes whose sha256 is the stored one (so zeroed or edited bits are caught); the wild-photo
    embeddings finite and unit-norm; tolerances non-negative.

    Raises:
        BaselineError: naming the file and the field.
    """

    def bad(field: str, why: str) -> BaselineError:
        return BaselineError(f"baseline {path}: {field}: {why}")

    try:
        b = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BaselineError(f"baseline {path}: not readable JSON ({e})") from None
    if not isinstance(b, dict):
        raise bad("(top level)", "not a JSON object")
    if not isinstance(b.get("name"), str) or not b["name"]:
        raise bad("name", "missing or not a string")
    if not isinstance(b.get("overrides"), list) or not all(isinstance(o, str) for o in b["overrides"]):
        raise bad("overrides", "missing or not a list of strings")
    for key in IDENTITY:
        v = b.get(key)
        if key == "weights_sha256" and v is None:
            continue  # a model without a weights file
        if not isinstance(v, str) or not v:
            raise bad(key, "missing or not a string (what the baseline measured is checked against each run)")
    figures = b.get("figures")
    if not isinstance(figures, dict):
        raise bad("figures", "missing")
    for key in FIGURES:
        v = figures.get(key, "missing")
        if v is not None and not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
            raise bad(f"figures.{key}", f"{v!r} is not a rate in [0, 1]")
    for key, v in (b.get("tolerances") or {}).items():
        if not (isinstance(v, (int, float)) and v >= 0):
            raise bad(f"tolerances.{key}", f"{v!r} is not a non-negative number")
    dec = b.get("decisions")
    if not isinstance(dec, dict):
        raise bad("decisions", "missing")
    thr, n = dec.get("threshold"), dec.get("n")
    if not (isinstance(thr, (int, float)) and -1.0 <= thr <= 1.0):
        raise bad("decisions.threshold", f"{thr!r} is not a cosine threshold in [-1, 1]")
    if not (isinstance(n, int) and n > 0):
        raise bad("decisions.n", f"{n!r} is not a positive pair count")
    try:
        raw = base64.b64decode(str(dec.get("bits", "")), validate=True)
    except ValueError:
        raise bad("decisions.bits", "not base64") from None
    if len(raw) != (n + 7) // 8:
        raise bad("decisions.bits", f"{len(raw)} bytes for {n} decisions (expected {(n + 7) // 8})")
    if hashlib.sha256(raw).hexdigest() != dec.get("sha256"):
        raise bad(
            "decisions.bits",
            f"sha256 {hashlib.sha256(raw).hexdigest()[:12]} is not the recorded "
            f"{str(dec.get('sha256'))[:12]}: the decisions were altered",
        )
    wild = b.get("wild_embeddings")
    try:
        w = np.asarray(wild, np.float64)
    except (TypeError, ValueError):
        raise bad("wild_embeddings", "not a numeric matrix") from None
    if w.ndim != 2 or not len(w) or not np.isfinite(w).all() or np.abs(np.linalg.norm(w, axis=1) - 1).max() > 1e-3:
        raise bad("wild_embeddings", "not a finite matrix of unit-norm rows")
    return b


def compose_eval(overrides: list[str]) -> Any:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("eval", overrides=overrides)


def figures_of(summary: dict[str, Any]) -> dict[str, float | None]:
    return {
        "accuracy_mean": summary["accuracy_mean"],
        "eer": summary["eer"],
        "tar_at_far_1e-3": summary["tar_at_far"].get("1e-3"),
    }


def roc_decisions(out_dir: Path, summary: dict[str, Any], threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(accepted, label) bool ``[P]`` for every ROC pair in protocol order (dropped pairs rejected)."""
    from fetoolkit.reports.tables import read_pairs

    df = read_pairs(out_dir / summary["pairs_file"])
    df = df[df["protocol"].astype(str).str.contains("roc")]
    score = df["score"].to_numpy(np.float64)
    accepted = df["enrolled"].to_numpy(bool) & (np.nan_to_num(score, nan=-np.inf) >= threshold)
    return accepted, df["label"].to_numpy(bool)


def roc_subjects(out_dir: Path, summary: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """(subject_a, subject_b) object ``[P]`` of the ROC pairs in protocol order, None when unknown."""
    from fetoolkit.reports.tables import read_pairs

    df = read_pairs(out_dir / summary["pairs_file"])
    df = df[df["protocol"].astype(str).str.contains("roc")]
    if "subject_a" not in df or "subject_b" not in df:
        return None
    return df["subject_a"].to_numpy(object), df["subject_b"].to_numpy(object)


def wild_embeddings(cfg: Any) -> np.ndarray:
    """L2-normalised embeddings ``[4, D]`` of the in-the-wild colour photos, through ``cfg``'s pipeline."""
    from fetoolkit.config import detector_cfg, pipeline_cfg
    from fetoolkit.data.wild import WILD_IMAGES, load_wild
    from fetoolkit.detect.registry import build_detector
    from fetoolkit.models.factory import create_embedder
    from fetoolkit.pipeline import crop_images, embed_crops

    paths = load_wild()
    pipe = pipeline_cfg(cfg)
    embedder = create_embedder(cfg.model.name, weights=cfg.model.get("weights"), backend=cfg.backend.name)
    detector = build_detector(detector_cfg(cfg), backend="torch") if pipe.align else None
    crops = crop_images([paths[n] for n in sorted(WILD_IMAGES)], detector, pipe, size=embedder.contract.size)
    if not crops.ok.all():
        raise RuntimeError(f"wild photos did not enrol: {crops.failures}")
    return embed_crops(crops.faces, embedder, pipe)


def evaluate_gate(overrides: list[str], out_dir: Path) -> tuple[dict[str, Any], Any]:
    """Run one gated evaluation; returns (summary, composed cfg)."""
    from fetoolkit.eval_run import RESULTS_FILE, run
    from fetoolkit.results import incomplete_reason

    cfg = compose_eval([*overrides, "pipeline.progress=false"])
    summary = run(cfg, out_dir)
    reason = incomplete_reason(out_dir / RESULTS_FILE)
    if reason:  # the gate reads the pair table next: only from a run that wrote everything
        raise RuntimeError(f"{out_dir / RESULTS_FILE}: {reason}")
    return summary, cfg


def identity_rows(baseline: dict[str, Any], summary: dict[str, Any]) -> list[Row]:
    """One failed row per :data:`IDENTITY` key where the run is not what the baseline measured
    (its figures would then be compared with another model's, backend's or data set's); [] when all agree."""
    rows = []
    for key in IDENTITY:
        base, cur = baseline.get(key), summary.get(key)
        if base != cur:
            rows.append(Row(baseline["name"], key, str(base), str(cur), "the baseline's", "FAIL"))
    return rows


def check(
    baseline: dict[str, Any],
    summary: dict[str, Any],
    accepted: np.ndarray,
    labels: np.ndarray,
    wild: np.ndarray,
    subjects: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Row]:
    """Compare one current run with its baseline; one ``Row`` per check (``subjects``: the pairs'
    subjects, for the informational HTER-difference interval)."""
    name = baseline["name"]
    rows: list[Row] = []
    tol = baseline.get("tolerances", {})
    current = figures_of(summary)
    for key, (direction, default_tol) in FIGURES.items():
        base, cur, t = baseline["figures"][key], current[key], float(tol.get(key, default_tol))
        if base is None or cur is None:
            ok = base is None and cur is None
            rows.append(Row(name, key, str(base), str(cur), f"±{t}", "ok" if ok else "FAIL"))
            continue
        delta = (cur - base) * direction  # > 0 means better
        status = "FAIL" if delta < -t else ("improved" if delta > t else "ok")
        limit = f">= {base - t:.4f}" if direction > 0 else f"<= {base + t:.4f}"
        rows.append(Row(name, key, f"{base:.4f}", f"{cur:.4f}", limit, status))

    dec = baseline["decisions"]
    if len(accepted) != dec["n"]:
        rows.append(Row(name, "pairs", str(dec["n"]), str(len(accepted)), "same pairs", "FAIL"))
    else:
        base_accept = unpack_bits(dec["bits"], dec["n"])
        test = mcnemar(base_accept == labels, accepted == labels)
        alpha = float(tol.get("mcnemar_alpha", DEFAULT_ALPHA))
        significant = test.p_value < alpha
        status = ("FAIL" if test.n_worse > test.n_better else "improved") if significant else "ok"
        rows.append(
            Row(
                name,
                f"McNemar @ thr {dec['threshold']:.4f}",
                "0 changed",
                f"{test.n_worse} worse / {test.n_better} better, p={test.p_value:.2g}",
                f"p >= {alpha}",
                status,
            )
        )
        if subjects is not None:
            diff, (lo, hi) = decision_hter_difference(base_accept, accepted, labels, subjects)
            moved = "ok" if not (lo > 0 or hi < 0) else ("worse" if lo > 0 else "better")
            rows.append(
                Row(
                    name,
                    f"HTER difference @ thr {dec['threshold']:.4f}",
                    "0",
                    f"{diff:+.4f} [{lo:+.4f}, {hi:+.4f}]",
                    "(informational: 95% subject bootstrap)",
                    moved,
                )
            )
        digest = pack_bits(accepted)[1]
        rows.append(
            Row(
                name,
                "decision digest",
                dec["sha256"][:12],
                digest[:12],
                "(informational)",
                "ok" if digest == dec["sha256"] else "changed",
            )
        )

    base_wild = np.asarray(baseline["wild_embeddings"], np.float32)
    limit = float(tol.get("min_wild_cosine", DEFAULT_MIN_WILD_COSINE))
    check_name = "wild photos: min cosine to baseline"
    if base_wild.shape != wild.shape:
        shapes = f"embeddings {wild.shape}, baseline {base_wild.shape}"
        rows.append(Row(name, check_name, "1.0000", shapes, f">= {limit}", "FAIL"))
        return rows
    min_cos = float(np.min(np.sum(base_wild * wild, axis=1)))
    rows.append(Row(name, check_name, "1.0000", f"{min_cos:.4f}", f">= {limit}", "ok" if min_cos >= limit else "FAIL"))
    return rows


def format_table(rows: list[Row]) -> str:
    head = ("gate", "check", "baseline", "current", "limit", "status")
    cells = [head, *[(r.gate, r.check, r.baseline, r.current, r.limit, r.status) for r in rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(head))) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def make_baseline(
    name: str,
    overrides: list[str],
    summary: dict[str, Any],
    accepted: np.ndarray,
    wild: np.ndarray,
    old: dict[str, Any] | None,
    reason: str,
) -> dict[str, Any]:
    bits, digest = pack_bits(accepted)
    history = list((old or {}).get("history", []))
    history.append({"date": dt.date.today().isoformat(), "reason": reason, "figures": figures_of(summary)})
    return {
        "name": name,
        "overrides": overrides,
        "model": summary["model"],
        "backend": summary["backend"],
        "dataset": summary["dataset"],
        "weights_sha256": summary.get("weights_sha256"),
        "figures": figures_of(summary),
        "threshold": summary["best_threshold"],
        "tolerances": (old or {}).get("tolerances")
        or {
            **{k: v[1] for k, v in FIGURES.items()},
            "mcnemar_alpha": DEFAULT_ALPHA,
            "min_wild_cosine": DEFAULT_MIN_WILD_COSINE,
        },
        "decisions": {
            "pairs": "roc",
            "threshold": summary["best_threshold"],
            "n": int(len(accepted)),
            "sha256": digest,
            "bits": bits,
        },
        "wild_embeddings": np.round(wild.astype(np.float64), 6).tolist(),
        "history": history,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every gated eval (+perturb=no_align)")
    parser.add_argument("--baselines", type=Path, default=BASELINES)
    parser.add_argument("--out", type=Path, default=None, help="run folder (default outputs/gate/<time>)")
    parser.add_argument("--update", action="store_true", help="rewrite the baselines from this run")
    parser.add_argument("--reason", default="", help="why the baselines change (required with --update)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.update and not args.reason.strip():
        parser.error('--update needs --reason "why the baselines change"')
    if args.update and args.overrides:
        parser.error(
            f"--update takes no overrides (got {' '.join(args.overrides)}): a baseline records its own overrides "
            "only, so these would be stored as the plain pipeline's figures; to gate another set-up, add a "
            "baseline whose overrides name it"
        )
    files = sorted(args.baselines.glob("*.json"))
    if not files:
        parser.error(f"no baselines in {args.baselines}")
    out_root = args.out or Path("outputs") / "gate" / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    baselines: dict[Path, dict[str, Any]] = {}
    for path in files:  # every baseline is checked before any eval runs
        try:
            baselines[path] = validate_baseline(path)
        except BaselineError as e:
            log.error("GATE FAILED: %s", e)
            return 1
    rows: list[Row] = []
    for path, baseline in baselines.items():
        name = baseline["name"]
        try:
            summary, cfg = evaluate_gate([*baseline["overrides"], *args.overrides], out_root / name)
        except (RunFolderError, WriteError) as e:  # --out holding an earlier gate's runs, a full disk
            log.error("GATE FAILED: %s", e)
            return 2
        if not args.update and (wrong := identity_rows(baseline, summary)):
            rows.extend(wrong)  # another model's (backend's, data set's) figures would be compared: no figure rows
            continue
        accepted, labels = roc_decisions(
            out_root / name,
            summary,
            baseline["decisions"]["threshold"] if not args.update else summary["best_threshold"],
        )
        wild = wild_embeddings(cfg)
        if args.update:
            new = make_baseline(name, baseline["overrides"], summary, accepted, wild, baseline, args.reason.strip())
            tmp = path.with_name(f".{path.name}.part")
            tmp.write_text(json.dumps(new, indent=1) + "\n")
            os.replace(tmp, path)  # a baseline is never half written
            log.info("updated %s", path)
            continue
        rows.extend(check(baseline, summary, accepted, labels, wild, roc_subjects(out_root / name, summary)))
    if args.update:
        return 0
    table = format_table(rows)
    failed = [r for r in rows if r.status == "FAIL"]
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "gate.json").write_text(
        json.dumps({"overrides": args.overrides, "passed": not failed, "rows": [r.__dict__ for r in rows]}, indent=1)
        + "\n"
    )
    sys.stdout.write(table + "\n")  # the table is the command's output, not a log line
    for r in rows:
        if r.status == "improved":
            log.info(
                "note: %s %s improved (%s -> %s); `make gate-update REASON=...` records it",
                r.gate,
                r.check,
                r.baseline,
                r.current,
            )
    if failed:
        log.error(
            "GATE FAILED: %d check(s) moved beyond tolerance: %s",
            len(failed),
            "; ".join(f"{r.gate} {r.check} {r.baseline} -> {r.current}" for r in failed),
        )
        return 1
    log.info("gate passed (%d checks)", len(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
