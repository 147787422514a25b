"""``python -m fetoolkit.verify a.jpg b.jpg [threshold=0.5 | run=DIR far=1e-3] [model=arcface] [detector=yunet]``

Are the faces of two photos the same person? Prints the cosine score, the decision and where the
threshold came from (given, an eval run's at a FAR, or the model's default); ``json=true`` prints
the same as JSON. Exit 0 on an answer, 2 on a user error (one line, the fix named).
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
        usage = "python -m fetoolkit.verify a.jpg b.jpg [threshold=0.5 | run=DIR far=1e-3]"
        raise UsageError(f"give two images (got {len(paths)}): {usage}")
    as_json = kw.pop("json", False)
    v = verify(paths[0], paths[1], **kw)
    if as_json:
        out = {
            "score": v.score,
            "same_person": v.same,
            "threshold": v.threshold,
            "threshold_source": v.threshold_source,
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
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, doc=__doc__))
