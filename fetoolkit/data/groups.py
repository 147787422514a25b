"""Group files (``groups=FILE``): which demographic (or any) group each subject or image belongs to.

A CSV whose first column is ``subject`` or ``image`` and whose other columns are attributes, one
value per row (``subject,gender,age_band``). An empty cell means unknown: such comparisons are left
out of that attribute's figures and counted. ``image`` keys match a comparison's image by the whole
path or by its last path components (``s12/3.pgm`` matches ``/data/orl/s12/3.pgm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fetoolkit.data.scores import PairScores
from fetoolkit.hub import sha256_file


class GroupFileError(ValueError):
    """A group file that cannot be used; the message says why and how to fix it."""


@dataclass(frozen=True)
class GroupTable:
    """A group file read.

    Attributes:
        key: ``subject`` or ``image``: what the first column names.
        attributes: attribute -> (key -> group); keys without a value are absent.
        path: the file.
        sha256: its sha256.
    """

    key: str
    attributes: dict[str, dict[str, str]]
    path: str
    sha256: str


def load_groups(path: str | Path) -> GroupTable:
    """Read a group file.

    Raises:
        FileNotFoundError: no such file.
        GroupFileError: no ``subject``/``image`` first column, no attribute column, or a key
            listed twice with different groups.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"group file not found: {path} (groups=FILE: a CSV subject,group or image,group)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if df.shape[1] < 2 or df.columns[0] not in ("subject", "image"):
        raise GroupFileError(
            f"{path}: the first column must be 'subject' or 'image' and at least one attribute column must "
            f"follow (e.g. 'subject,group'); found columns {list(df.columns)}"
        )
    key = str(df.columns[0])
    keys = df[key].str.strip().str.replace("\\", "/", regex=False)
    attributes: dict[str, dict[str, str]] = {}
    for col in df.columns[1:]:
        values = df[col].str.strip()
        table: dict[str, str] = {}
        for k, v in zip(keys, values):
            if not v:
                continue
            if table.get(k, v) != v:
                raise GroupFileError(f"{path}: {key} {k!r} is in {col} group {table[k]!r} and {v!r}")
            table[k] = v
        attributes[str(col)] = table
    return GroupTable(key, attributes, str(path), sha256_file(path))


def _suffixes(name: str) -> list[str]:
    parts = name.replace("\\", "/").split("/")
    return ["/".join(parts[k:]) for k in range(len(parts)) if parts[k:] != [""]]


def _lookup(table: dict[str, str], names: np.ndarray, by_path: bool) -> np.ndarray:
    out = np.empty(len(names), object)
    memo: dict[str, str | None] = {}
    for k, n in enumerate(names):
        n = str(n)
        if n not in memo:
            hit = table.get(n)
            if hit is None and by_path:
                hit = next((table[s] for s in _suffixes(n) if s in table), None)
            memo[n] = hit
        out[k] = memo[n]
    return out


def assign_groups(table: GroupTable, pairs: PairScores) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each attribute's group of both sides of every comparison (None where unknown).

    Raises:
        GroupFileError: the comparisons lack what the file is keyed by (subjects or images), or
            no comparison matches any key.
    """
    if table.key == "subject":
        if not pairs.has_subjects:
            raise GroupFileError(
                f"{table.path} is keyed by subject, but these comparisons have no subjects "
                "(give subject1/subject2 columns, or key the file by image)"
            )
        a, b = pairs.subject_a, pairs.subject_b
    else:
        if pairs.item_a is None or pairs.item_b is None:
            raise GroupFileError(f"{table.path} is keyed by image, but these comparisons do not name their images")
        a, b = pairs.item_a, pairs.item_b
    assert a is not None and b is not None
    by_path = table.key == "image"
    out = {attr: (_lookup(t, a, by_path), _lookup(t, b, by_path)) for attr, t in table.attributes.items()}
    if all(all(v is None for v in ga) and all(v is None for v in gb) for ga, gb in out.values()):
        example = str(a[0])
        raise GroupFileError(
            f"no {table.key} of these comparisons is in {table.path} (e.g. {example!r}); "
            f"the first column must hold the {table.key} names as the scores name them"
        )
    return out
