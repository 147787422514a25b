"""``python -m fetoolkit.cache verify|prune|clear``: check, tidy or empty fetoolkit's cache.

* ``verify``: check every embedding-cache entry and derived file; exit 1 if any is damaged
  (outdated ones, e.g. of an older format, are listed and never read).
* ``verify STORE [STORE ...]``: check those embedding stores (``python -m fetoolkit.extract ...
  store=STORE``) instead: every recorded shard against its manifest record (size, sha256, Parquet,
  finite unit-norm embeddings) and the identity against its ``identity_sha256``; each damaged file
  is listed, exit 1 if any (running the extract that made a store again recomputes its damaged
  shards), exit 2 for a folder that is not a store.
* ``prune [--older-than DAYS]``: remove the bad ones (they are recomputed when next needed),
  orphan sidecars and day-old temporary files; with ``--older-than``, also entries not written
  for that many days.
* ``clear [--derived]``: remove the embedding cache; with ``--derived`` also the converted
  weights and the ONNX exports. Fetched weights and data sets are kept.

``--dir`` names an embedding cache other than the default (``cache.dir`` of the eval job).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from fetoolkit.cache import default_cache_dir
from fetoolkit.cache.maintenance import clear, prune, scan
from fetoolkit.hub import cache_home

log = logging.getLogger("fetoolkit.cache")

#: The fix of a store whose identity does not match its digest (its rows cannot be trusted).
IDENTITY_FIX = (
    "an identity that does not match its digest cannot be trusted: delete the store and run its extract again"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run one command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m fetoolkit.cache", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="embedding cache folder (default: <cache>/embeddings)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_verify = sub.add_parser(
        "verify",
        help="check every entry and derived file, or the embedding stores named; exit 1 if any is damaged",
        description="Check every embedding-cache entry and derived file; with STORE folders, check those "
        "embedding stores instead (every shard's size, sha256 and rows, the identity's digest). Exit 1 if "
        "anything is damaged, 2 if a STORE is not a store.",
    )
    p_verify.add_argument("stores", nargs="*", type=Path, metavar="STORE", help="embedding store folders to verify")
    p_prune = sub.add_parser("prune", help="remove bad entries and files, orphan sidecars, stale temporaries")
    p_prune.add_argument("--older-than", type=float, default=None, metavar="DAYS", help="also entries this old")
    p_clear = sub.add_parser("clear", help="remove the embedding cache")
    p_clear.add_argument("--derived", action="store_true", help="also converted weights and ONNX exports")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "verify" and args.stores:
        return _verify_stores(args.stores)
    home, emb = cache_home(), args.dir if args.dir is not None else default_cache_dir()

    if args.command == "clear":
        gone = clear(home, emb, derived=args.derived)
        log.info("removed %s", ", ".join(map(str, gone)) if gone else "nothing (already empty)")
        return 0
    findings = list(scan(home, emb))
    bad = [f for f in findings if f.damaged]
    outdated = [f for f in findings if f.problem is not None and not f.damaged]
    if args.command == "verify":
        for f in bad:
            log.info("DAMAGED %s: %s", f.path, f.problem)
        for f in outdated:
            log.info("outdated %s: %s", f.path, f.problem)
        n_entries = sum(f.kind == "entry" for f in findings)
        n_derived = sum(f.kind == "derived" for f in findings)
        total = sum(f.size for f in findings) / 1e6
        log.info(
            "%s: %d entries and %d derived files (%.1f MB) checked: %d damaged, %d outdated%s",
            home if emb.parent == home else f"{home} and {emb}",
            n_entries,
            n_derived,
            total,
            len(bad),
            len(outdated),
            " (python -m fetoolkit.cache prune removes them; they are rebuilt when next needed)"
            if bad or outdated
            else "",
        )
        return 1 if bad else 0
    removed = prune(findings, args.older_than)
    for f in removed:
        log.info("removed %s (%s)", f.path, f.problem or f"not written for {f.age_s / 86400:.1f} days")
    log.info("removed %d file(s), %.1f MB", len(removed), sum(f.size for f in removed) / 1e6)
    return 0


def _verify_stores(stores: Sequence[Path]) -> int:
    """``verify STORE ...``: 0 all good, 1 something damaged, 2 a folder that is not a store."""
    from fetoolkit.store import MANIFEST, RECOMPUTE, StoreError  # pyarrow: only when stores are named
    from fetoolkit.store_verify import verify_store

    status = 0
    for path in stores:
        try:
            report = verify_store(path)
        except StoreError as e:
            log.error("error: %s", e)
            status = 2
            continue
        fixes = []
        for file, problem in report.damaged:
            log.info("DAMAGED %s: %s", file, problem)
            fix = IDENTITY_FIX if file.name == MANIFEST else RECOMPUTE
            if fix not in fixes:
                fixes.append(fix)
        log.info(
            "store %s: identity and %d of %d shards (%.1f MB) checked%s: %d damaged%s",
            report.root,
            report.n_shards,
            report.n_planned,
            report.size_bytes / 1e6,
            "" if report.complete else " (unfinished: run its extract again to complete it)",
            len(report.damaged),
            f" ({'; '.join(fixes)})" if fixes else "",
        )
        if report.damaged and status == 0:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
