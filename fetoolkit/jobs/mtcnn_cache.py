"""``python -m fetoolkit.jobs.mtcnn_cache [--out DIR]``: export the MTCNN ONNX files ahead of time."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from fetoolkit.detect.mtcnn_files import export_mtcnn_onnx
from fetoolkit.hub import cache_home

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fetoolkit.jobs.mtcnn_cache [--out DIR]``: export the MTCNN ONNX files."""
    parser = argparse.ArgumentParser(description="Export facenet-pytorch's MTCNN nets to ONNX.")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <cache>/mtcnn)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths = export_mtcnn_onnx(args.out if args.out is not None else cache_home() / "mtcnn")
    for net, path in paths.items():
        log.info("%s: %s", net, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
