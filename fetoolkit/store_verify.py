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
  (``isa_mixed``), and the eval reading it warns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fetoolkit.store import MANIFEST, check_shard, read_manifest
from fetoolkit.store_check import identity_problem

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
    for rec in sorted(m["shards"], key=lambda r: int(r.get("index", -1))):
        _, problem = check_shard(root, m, rec)
        report.n_shards += 1
        report.size_bytes += int(rec.get("bytes") or 0)
        if problem:
            report.damaged.append((root / str(rec.get("file")), problem))
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
    runs = {int(r["run"]): r for r in m.get("runs", [])}
    out: dict[str, list[int]] = {}
    for k in sorted({int(rec["run"]) for rec in m.get("shards", []) if rec.get("run") is not None}):
        isa = run_isa(m, runs.get(k, {}))
        if isa is not None:
            out.setdefault(json.dumps(isa, sort_keys=True), []).append(k)
    return out


def describe_isa(isa: dict[str, Any] | None) -> str:
    """``avx2,fma,... (int8 kernels: vnni)`` for the log."""
    if not isa:
        return "not recorded"
    flags = ",".join(isa.get("isa") or []) or "none"
    masked = f", masked to {isa['isa_masked']}" if isa.get("isa_masked") else ""
    return f"{flags} (int8 kernels: {isa.get('int8_kernels')}{masked})"


__all__ = ["ISA_KEYS", "StoreReport", "describe_isa", "isa_of", "rows_isas", "run_isa", "verify_store"]
