"""Verifying a whole embedding store, and on which CPU ISAs its rows were computed.

* :func:`verify_store` (``python -m fetoolkit.cache verify STORE``): the identity against its
  ``identity_sha256`` and every recorded shard against its record (size, sha256, Parquet, rows:
  :func:`fetoolkit.store.check_shard`); what is damaged is listed, file by file.
* :func:`run_isa`, :func:`rows_isas`: the ISA (``fetoolkit.cpu.machine_info``'s ``isa``, its
  mask and the int8 kernel family onnxruntime picks) of each run and of the runs whose shards the
  store holds. A run records its own (``runs[i].isa``); a store made before runs recorded it has
  its first run's in ``machine``. It is the ISA of the process that runs the extract: with
  ``engine=ray`` on a cluster of unlike nodes, the workers' may differ (not recorded). The
  kernels picked for an ISA move a float result's last bits (and int8 ones more: see
  :mod:`fetoolkit.cpu`), so a store resumed on another ISA says so in the log and in its manifest
  (``runs[].isa``, ``runs[].isa_differs_from_runs``; :func:`isa_mixed` derives the rest), and the
  eval reading it warns (:func:`isa_warning`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fetoolkit.store import MANIFEST, check_shard, read_manifest, shard_plan
from fetoolkit.store_check import identity_problem, record_order

#: The keys of ``machine_info`` that name the kernels a computation ran on.
ISA_KEYS = ("isa", "isa_masked", "int8_kernels")


@dataclass
class StoreReport:
    """What :func:`verify_store` found.

    Attributes:
        root: the store.
        damaged: ``(file, what is wrong)`` of the manifest (identity) and of each damaged shard.
        n_shards: recorded shards checked.
        n_planned: shards of the whole store.
        size_bytes: bytes of the recorded shards.
        complete: the manifest says every shard is written.
    """

    root: Path
    damaged: list[tuple[Path, str]] = field(default_factory=list)
    n_shards: int = 0
    n_planned: int = 0
    size_bytes: int = 0
    complete: bool = False


def verify_store(root: str | Path) -> StoreReport:
    """Check the store at ``root``: its identity and every recorded shard.

    Raises:
        fetoolkit.store.StoreError: not a store (a half-created one named so), an unreadable manifest.
    """
    root = Path(root).expanduser().resolve()
    m = read_manifest(root, check_identity=False)
    report = StoreReport(root, n_planned=int(m.get("n_shards", 0)), complete=bool(m.get("complete")))
    problem = identity_problem(m)
    if problem:
        report.damaged.append((root / MANIFEST, problem))
    plan = shard_plan(int(m["n_images"]), int(m["shard_size"]))
    for rec in sorted(m["shards"], key=record_order):
        _, problem = check_shard(root, m, rec, plan)
        report.n_shards += 1
        nbytes = rec.get("bytes") if isinstance(rec, dict) else None
        report.size_bytes += nbytes if isinstance(nbytes, int) else 0
        if problem:
            report.damaged.append((root / str(rec.get("file") if isinstance(rec, dict) else MANIFEST), problem))
    return report


def isa_of(machine: dict[str, Any]) -> dict[str, Any]:
    """The ISA part of a ``fetoolkit.cpu.machine_info`` record."""
    return {k: machine.get(k) for k in ISA_KEYS}


def run_isa(m: dict[str, Any], run: dict[str, Any]) -> dict[str, Any] | None:
    """The ISA run ``run`` of manifest ``m`` computed on (None: not recorded)."""
    if run.get("isa"):
        return run["isa"]
    if run.get("run") == 0 and m.get("machine"):
        return isa_of(m["machine"])  # a store made before runs recorded their ISA: the creating machine's
    return None


def rows_isas(m: dict[str, Any]) -> dict[str, list[int]]:
    """The distinct ISAs (canonical JSON) of the runs whose shards the manifest records -> those runs."""
    runs = {r["run"]: r for r in m.get("runs", []) if isinstance(r, dict) and isinstance(r.get("run"), int)}
    out: dict[str, list[int]] = {}
    for k in sorted({r["run"] for r in m.get("shards", []) if isinstance(r, dict) and isinstance(r.get("run"), int)}):
        isa = run_isa(m, runs.get(k, {}))
        if isa is not None:
            out.setdefault(json.dumps(isa, sort_keys=True), []).append(k)
    return out


def isa_mixed(m: dict[str, Any]) -> bool:
    """Whether the store's kept rows were computed on more than one ISA (derived from the runs' ISAs
    each time; a manifest written before may still hold a stored ``isa_mixed``, not read)."""
    return len(rows_isas(m)) > 1


def isa_warning(root: Path, m: dict[str, Any], here: dict[str, Any] | None = None) -> tuple[list[int], str | None]:
    """The one warning on the ISAs of a store's rows: ``(runs, line)``, or ``([], None)`` when there is none.

    Args:
        root: the store (named in the line).
        m: its manifest.
        here: the ISA of a run about to resume the store: the runs whose kept shards were computed on
            another; None (a reader): every run, when the rows come from more than one ISA.
    """
    isas = rows_isas(m)
    if here is None:
        others = isas if len(isas) > 1 else {}
        head = f"store {root}: its rows were computed on {len(isas)} CPU ISAs"
    else:
        key = json.dumps(here, sort_keys=True)
        others = {k: runs for k, runs in isas.items() if k != key}
        head = (
            f"store {root} is resumed on another CPU ISA than the one its kept shards were computed on "
            f"(this run: {describe_isa(here)})"
        )
    if not others:
        return [], None
    detail = "; ".join(f"runs {runs}: {describe_isa(json.loads(k))}" for k, runs in others.items())
    return sorted(r for runs in others.values() for r in runs), (
        f"{head} ({detail}): rows of different ISAs may differ in the last float bits (more with int8 kernels); "
        "the store records each run's ISA (manifest.json runs[].isa)"
    )


def describe_isa(isa: dict[str, Any] | None) -> str:
    """``avx2,fma,... (int8 kernels: vnni)`` for the log."""
    if not isa:
        return "not recorded"
    flags = ",".join(isa.get("isa") or []) or "none"
    masked = f", masked to {isa['isa_masked']}" if isa.get("isa_masked") else ""
    return f"{flags} (int8 kernels: {isa.get('int8_kernels')}{masked})"


__all__ = [
    "ISA_KEYS",
    "StoreReport",
    "describe_isa",
    "isa_mixed",
    "isa_of",
    "isa_warning",
    "rows_isas",
    "run_isa",
    "verify_store",
]
