"""``python -m fetoolkit.embed PATH... out=faces.parquet [model=arcface] [detector=yunet] [all_faces=true]``

Embeds the faces of images (files, or folders searched recursively for images) into one Parquet
file: one row per face with ``path``, ``face`` (0 = best), ``score``, ``box``, ``landmarks``,
``quality`` and ``embedding`` (float32 list); an image without a face, or that cannot be read, is a
row with ``error`` set and no embedding, so nothing is dropped silently. Exit 2 on a user error.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from fetoolkit.cli_args import UsageError, parse_args, run_main

log = logging.getLogger("fetoolkit.embed")

COLUMNS = ["path", "face", "score", "box", "landmarks", "quality", "embedding", "error"]
KEYS = {"out": str, "model": str, "detector": str, "backend": str, "weights": str, "all_faces": bool, "aligned": bool}


def image_files(paths: list[str]) -> list[Path]:
    """The files named and the image files under the folders named (sorted); missing paths refused."""
    from PIL import Image

    exts = {e.lower() for e in Image.registered_extensions()}
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


def main(argv: list[str]) -> int:
    import pandas as pd

    from fetoolkit.onecall import embed, prepare

    paths, kw = parse_args(argv, KEYS)
    out = kw.pop("out", None)
    if not paths or out is None:
        raise UsageError(
            "give images or folders and out=FILE.parquet: python -m fetoolkit.embed photos/ out=faces.parquet"
        )
    files = image_files(paths)
    if not files:
        raise UsageError(f"no image files in {paths}")
    prepare(**{k: v for k, v in kw.items() if k in ("model", "detector", "backend", "weights")})  # fail fast
    rows: list[dict[str, Any]] = []
    for f in files:
        try:
            faces = embed(f, **kw)
        except (LookupError, ValueError, OSError) as e:  # no face, not an image, too small, unreadable
            rows.append({"path": str(f), "face": -1, "error": f"{type(e).__name__}: {e}"})
            continue
        for k, face in enumerate(faces):
            rows.append(
                {
                    "path": str(f),
                    "face": k,
                    "score": face.score,
                    "box": None if face.box is None else face.box.tolist(),
                    "landmarks": None if face.landmarks is None else face.landmarks.reshape(-1).tolist(),
                    "quality": face.quality,
                    "embedding": face.embedding.tolist(),
                    "error": None,
                }
            )
    df = pd.DataFrame(rows, columns=COLUMNS)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out, index=False)
    n_err = int(df["error"].notna().sum())
    n_faces = len(df) - n_err
    print(f"{n_faces} faces from {len(files)} images written to {out}; {n_err} images without a face or unreadable")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(run_main(main, doc=__doc__))
