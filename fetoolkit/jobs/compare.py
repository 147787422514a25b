"""``python -m fetoolkit.compare ROOTS... [--out DIR]``: see :mod:`fetoolkit.reports.compare`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fetoolkit.reports.compare import __doc__ as _doc
from fetoolkit.reports.compare import collect
from fetoolkit.results import WriteError

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fetoolkit.compare", description=_doc.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", help="sweep or run folders holding results.json files")
    ap.add_argument("--out", default=None, help="output folder (default: the first root)")
    ap.add_argument(
        "--overlay-all", action="store_true", help="one ROC overlay even when the runs cover several data sets"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = collect(args.roots, args.out, overlay_all=args.overlay_all)
    except (FileNotFoundError, WriteError) as e:  # no finished run, or an output that could not be written
        log.error("%s", e)
        return 2
    sys.stdout.write(paths["markdown"].read_text())  # the table is the command's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
