"""``python -m fetoolkit.verify a.jpg b.jpg [threshold=0.5 | profile=FILE fmr=1e-3 | run=DIR far=1e-3] [model=...]``

Are the faces of two photos the same person? Prints the cosine score, the decision and where the
threshold came from (given, a decision profile's at an FMR, an eval run's at a FAR, or the model's
default); with ``profile=`` (an eval run's ``profile.json``) also the calibrated log-likelihood ratio
and ``p_same`` (at the profile's prior, or ``prior=``), and the model, detector and backend default
to the profile's. ``json=true`` prints the same as JSON. Exit 0 on an answer, 2 on a user error (one
line, the fix named), e.g. a profile made for another model or detector.
"""

from __future__ import annotations

import json
import sys

from fetoolkit.cli_args import UsageError, parse_args, run_main
from fetoolkit.onecall import verify

KEYS = {
    "threshold": float,
    "run": str,
    "far": float,
    "profile": str,
    "fmr": float,
    "prior": float,
    "allow_profile_mismatch": bool,
    "model": str,
    "detector": str,
    "backend": str,
    "weights": str,
    "aligned": bool,
    "json": bool,
}


def main(argv: list[str]) -> int:
    paths, kw = parse_args(argv, KEYS)
    if len(paths) != 2:
        usage = "python -m fetoolkit.verify a.jpg b.jpg [threshold=0.5 | profile=FILE fmr=1e-3 | run=DIR far=1e-3]"
        raise UsageError(f"give two images (got {len(paths)}): {usage}")
    as_json = kw.pop("json", False)
    v = verify(paths[0], paths[1], **kw)
    if as_json:
        out = {
            "score": v.score,
            "same_person": v.same,
            "threshold": v.threshold,
            "threshold_source": v.threshold_source,
            "llr": v.llr,
            "p_same": v.p_same,
            "prior": v.prior,
            "profile_id": v.profile_id,
            "warnings": list(v.warnings),
            "faces": [
                {"box": None if f.box is None else f.box.tolist(), "score": f.score, "quality": f.quality}
                for f in (v.face1, v.face2)
            ],
        }
        print(json.dumps(out, indent=2))
    else:
        verdict = "same person" if v.same else "different people"
        print(f"{verdict}: score {v.score:.4f} {'>=' if v.same else '<'} threshold {v.threshold:.4f}")
        print(f"threshold: {v.threshold_source}")
        if v.llr is not None:
            print(f"log-likelihood ratio {v.llr:.3f}; p(same person) {v.p_same:.4f} at prior {v.prior:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, doc=__doc__))
