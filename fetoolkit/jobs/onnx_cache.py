"""``python -m fetoolkit.jobs.onnx_cache NAME [--weights PATH]``: make the cached ONNX export ahead of time.

A user error (weights that are missing or not a model file) is one ``error: ...`` line on stderr and
exit 2, so that a parent process (the service) can say the real cause.
"""

from __future__ import annotations

import logging
import sys

from fetoolkit.cli_args import run_main
from fetoolkit.models.factory import exported_onnx, resolve_weights
from fetoolkit.models.registry import get_model_spec

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """``python -m fetoolkit.jobs.onnx_cache NAME [--weights PATH]``: make the cached ONNX export."""
    import argparse

    parser = argparse.ArgumentParser(description="Export a registered model to the ONNX cache.")
    parser.add_argument("name")
    parser.add_argument("--weights", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = get_model_spec(args.name)
    path, sha = resolve_weights(spec, args.weights)
    log.info("ONNX export: %s", exported_onnx(spec, path, sha))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, doc=__doc__))
