"""Scores from any system: score files in, :class:`ScoreSet` out (no model, no images).

Formats (``dataset.format``, ``auto`` picks by suffix and column count):

* ``bob4``: bob.bio's 4-column text ``claimed_id real_id test_label score`` (whitespace separated,
  ``#`` comments); genuine when ``claimed_id == real_id``;
* ``bob5``: bob.bio's 5-column text ``claimed_id model_label real_id test_label score``;
* ``csv`` / ``parquet``: columns ``label`` (1/0 or true/false, 1 = genuine) and ``score``, plus
  optional ``subject1``, ``subject2``, ``fold`` (k-fold accuracy is computed when given),
  ``group1``, ``group2`` (the group of each side, attribute ``group``), ``item1``, ``item2``
  (image or template names);
* an eval run's own ``pairs.parquet`` (or its folder): its ROC pairs, its k-fold pairs with their
  folds, subjects and image paths; pairs whose images did not enrol are counted and left out.
  A run folder, or a ``pairs.parquet`` inside one (beside a ``results.json`` or ``summary.md``), is
  read only when the run finished (:func:`fetoolkit.results.load_results`): an unfinished run's
  pair table may be partial; a ``pairs.parquet`` copied out of its folder is a plain score file.

A score that is not a finite number (NaN, +inf, -inf) counts as an error
(:mod:`fetoolkit.data.nonfinite`: a genuine one as a false non-match, an impostor one as a false
match; ``nonfinite_scores=refuse`` refuses the file instead). A pair listed more than once (in
either order where the format names both sides' items) is counted once
(:mod:`fetoolkit.data.repeats`, ``dataset.duplicate_pairs``). Both are listed in ``meta`` and the
reports. Only an eval run's pairs whose images did not enrol are left out (``n_missing``).
Text files may start with a byte-order mark; a file that is not UTF-8 is refused, naming the line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fetoolkit.data import nonfinite, repeats
from fetoolkit.hub import sha256_file

log = logging.getLogger(__name__)

FORMATS = ("auto", "bob4", "bob5", "csv", "parquet")
_BOB_COLUMNS = {
    "bob4": ["claimed_id", "real_id", "test_label", "score"],
    "bob5": ["claimed_id", "model_label", "real_id", "test_label", "score"],
}
_TRUE = {"1", "true", "yes", "genuine", "mated", "1.0"}
_FALSE = {"0", "false", "no", "impostor", "nonmated", "non-mated", "0.0"}


class ScoreFileError(ValueError):
    """A score file that cannot be read as the format it claims; the message names file and line."""


@dataclass(frozen=True)
class PairScores:
    """Scored comparisons with what is known of each side.

    Attributes:
        scores: float64 ``[P]`` similarity (higher = more alike); finite.
        labels: bool ``[P]``, True = genuine (mated) comparison.
        subject_a: object ``[P]`` subject of the first side (str), or None when unknown.
        subject_b: object ``[P]`` subject of the second side, or None.
        item_a: object ``[P]`` image / template name of the first side, or None.
        item_b: object ``[P]`` image / template name of the second side, or None.
        groups: attribute -> (object ``[P]`` group of side a, object ``[P]`` of side b); None
            entries where a side's group is unknown.
        scores_read: float64 ``[P]`` the scores as read, when some were not finite (``scores`` holds
            the stand-ins of :mod:`fetoolkit.data.nonfinite` there); None when every score was finite.
    """

    scores: np.ndarray
    labels: np.ndarray
    subject_a: np.ndarray | None = None
    subject_b: np.ndarray | None = None
    item_a: np.ndarray | None = None
    item_b: np.ndarray | None = None
    groups: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    scores_read: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def n_genuine(self) -> int:
        return int(self.labels.sum())

    @property
    def n_impostor(self) -> int:
        return int((~self.labels).sum())

    @property
    def has_subjects(self) -> bool:
        return self.subject_a is not None and self.subject_b is not None

    def subset(self, keep: np.ndarray) -> PairScores:
        """The comparisons where bool ``keep`` ``[P]`` is True."""

        def cut(x: np.ndarray | None) -> np.ndarray | None:
            return None if x is None else x[keep]

        return PairScores(
            self.scores[keep],
            self.labels[keep],
            cut(self.subject_a),
            cut(self.subject_b),
            cut(self.item_a),
            cut(self.item_b),
            {k: (a[keep], b[keep]) for k, (a, b) in self.groups.items()},
            cut(self.scores_read),
        )


@dataclass(frozen=True)
class ScoreSet:
    """A score file read: the ROC comparisons, the k-fold ones when folds are known, and provenance.

    Attributes:
        name: the data set's name in reports.
        roc: every usable comparison (ROC, EER, TAR@FAR, thresholds, groups).
        kfold: the comparisons with folds, or None (no k-fold accuracy then).
        kfold_folds: int64 ``[Q]`` fold of each ``kfold`` comparison, or None.
        n_missing: rows of an eval run's pair table left out because an image did not enrol.
        meta: file, format, sha256, row counts, ``duplicate_pairs`` (:mod:`fetoolkit.data.repeats`),
            ``nonfinite_scores`` (:mod:`fetoolkit.data.nonfinite`), and the run's ``results.json``
            model when the file is an eval run's pair table.
    """

    name: str
    roc: PairScores
    kfold: PairScores | None
    kfold_folds: np.ndarray | None
    n_missing: int
    meta: dict[str, Any]


def _finished_run(path: str | Path) -> dict[str, Any] | None:
    """The ``results.json`` of the run ``path`` is (a folder) or whose pair table it is (a
    ``pairs.parquet`` beside a ``results.json`` or ``summary.md``), None when ``path`` is no run's.

    Raises:
        ScoreFileError: the run did not finish (or its results.json is unusable): the folder and why.
    """
    from fetoolkit.results import RESULTS_FILE, ResultsError, load_results

    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "pairs.parquet").is_file():
            return None  # _resolve names the problem
        folder = p
    elif p.name == "pairs.parquet" and any((p.parent / f).exists() for f in (RESULTS_FILE, "summary.md")):
        folder = p.parent
    else:
        return None
    try:
        return load_results(folder)
    except ResultsError as e:
        raise ScoreFileError(
            f"{folder} is not a finished eval run ({e}): its pair table may be partial or another run's; "
            "rerun the eval into a fresh folder, or give a score file"
        ) from None


def _resolve(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / "pairs.parquet").is_file():
            return path / "pairs.parquet"
        raise FileNotFoundError(f"{path} is a folder without pairs.parquet: give a score file or an eval run folder")
    if not path.is_file():
        raise FileNotFoundError(f"score file not found: {path} (set dataset.path=FILE)")
    return path


def sniff_format(path: Path) -> str:
    """``bob4``/``bob5``/``csv``/``parquet`` from the suffix, or from the first data line's columns."""
    if path.suffix == ".parquet":
        return "parquet"
    if path.suffix == ".csv":
        return "csv"
    with path.open("r", errors="replace") as f:
        for no, line in enumerate(f, 1):
            tok = line.split()
            if not tok or tok[0].startswith("#"):
                continue
            if len(tok) in (4, 5):
                return f"bob{len(tok)}"
            raise ScoreFileError(
                f"{path}:{no}: {len(tok)} columns; a bob score file has 4 (claimed_id real_id test_label score) "
                "or 5 (claimed_id model_label real_id test_label score). Name CSV files *.csv."
            )
    raise ScoreFileError(f"{path}: no score lines")


def _labels(values: pd.Series, path: Path) -> np.ndarray:
    if values.dtype == bool:
        return values.to_numpy(bool)
    text = values.astype(str).str.strip().str.lower()
    good = text.isin(_TRUE | _FALSE)
    if not good.all():
        k = int(np.flatnonzero(~good.to_numpy())[0])
        raise ScoreFileError(f"{path}: row {k + 1}: label {values.iloc[k]!r} is not 1/0 (true/false, genuine/impostor)")
    return text.isin(_TRUE).to_numpy(bool)


def _scores(values: pd.Series, path: Path) -> np.ndarray:
    s = pd.to_numeric(values, errors="coerce")
    bad = s.isna() & values.notna() & ~values.astype(str).str.lower().isin({"nan", "none", ""})
    if bad.any():
        k = int(np.flatnonzero(bad.to_numpy())[0])
        raise ScoreFileError(f"{path}: row {k + 1}: score {values.iloc[k]!r} is not a number")
    return s.to_numpy(np.float64)


def _strings(values: pd.Series | None) -> np.ndarray | None:
    return None if values is None else values.astype(str).to_numpy(object)


def _subjects(df: pd.DataFrame, path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Both sides' subjects, or (None, None) when a column is absent or a cell is empty (logged)."""
    if "subject1" not in df.columns or "subject2" not in df.columns:
        return None, None
    a, b = _strings(df["subject1"]), _strings(df["subject2"])
    assert a is not None and b is not None
    empty = (a == "") | (b == "")
    if empty.any():
        log.warning(
            "%s: %d rows without a subject: subjects are treated as unknown (pair intervals, no subject groups)",
            path,
            int(empty.sum()),
        )
        return None, None
    return a, b


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file (a leading byte-order mark dropped).

    Raises:
        ScoreFileError: a line that is not UTF-8, named.
    """
    with path.open("rb") as f:
        for no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if no == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ScoreFileError(
                    f"{path}:{no}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                    "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                ) from None
            yield no, line


def _read_bob(path: Path, fmt: str) -> pd.DataFrame:
    """A bob score file: every non-blank line not starting with ``#`` is one comparison, and must hold
    exactly the format's columns (IDs are kept as written: ``NA`` is a name, not a missing value).
    The frame's ``line`` column holds each row's line number."""
    cols = _BOB_COLUMNS[fmt]
    rows: list[list[str]] = []
    lines: list[int] = []
    for no, line in _text_lines(path):
        tok = line.split()
        if not tok or tok[0].startswith("#"):
            continue
        if len(tok) != len(cols):
            raise ScoreFileError(f"{path}:{no}: {len(tok)} columns; {fmt} lines have {len(cols)} ({' '.join(cols)})")
        rows.append(tok)
        lines.append(no)
    if not rows:
        raise ScoreFileError(f"{path}: no score lines")
    df = pd.DataFrame(rows, columns=cols, dtype=object)
    score = _scores(df["score"], path)
    out = pd.DataFrame(
        {
            "label": df["claimed_id"] == df["real_id"],
            "score": score,
            "subject1": df["claimed_id"],
            "subject2": df["real_id"],
            "item1": df["model_label"] if fmt == "bob5" else df["claimed_id"],
            "item2": df["test_label"],
            "line": np.asarray(lines, np.int64),
        }
    )
    return out


def _read_table(path: Path, fmt: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A CSV/Parquet score table, or an eval run's pair table, as the CSV column names (CSV cells are
    read as text: ``NA`` stays a name, ``007`` stays ``007``). An eval run's table keeps its
    ``enrolled`` column; each row's place in the file is in ``line`` (CSV) or ``row`` (Parquet)."""
    try:
        df = (
            pd.read_parquet(path)
            if fmt == "parquet"
            else pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
        )
    except UnicodeDecodeError as e:
        raise ScoreFileError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save the file as UTF-8 (e.g. iconv -f latin1 "
            "-t utf-8)"
        ) from None
    except Exception as e:  # pyarrow / pandas raise many kinds for a damaged file
        raise ScoreFileError(f"{path}: not a readable {fmt} file ({type(e).__name__}: {e})") from None
    extra: dict[str, Any] = {}
    enrolled = None
    if {"protocol", "path_a", "path_b", "enrolled"} <= set(df.columns):  # an eval run's pairs.parquet
        extra["pairs_table"] = "eval run"
        enrolled = df["enrolled"].astype(bool).to_numpy()
        ren = {"path_a": "item1", "path_b": "item2", "subject_a": "subject1", "subject_b": "subject2"}
        df = df.rename(columns=ren)
    missing = {"label", "score"} - set(df.columns)
    if missing:
        raise ScoreFileError(
            f"{path}: needs columns label and score (has {', '.join(map(str, df.columns))}); "
            "optional: subject1, subject2, fold, group1, group2, item1, item2"
        )
    out = pd.DataFrame({"label": _labels(df["label"], path), "score": _scores(df["score"], path)})
    if enrolled is not None:
        out["enrolled"] = enrolled
    for c in ("subject1", "subject2", "item1", "item2", "group1", "group2"):
        if c in df.columns:
            out[c] = df[c].astype(object).where(df[c].notna(), "").astype(str).to_numpy(object)
    if "fold" in df.columns:
        fold = pd.to_numeric(df["fold"], errors="coerce")
        bad = fold.isna() | (fold != fold.round())
        if bad.any():
            k = int(np.flatnonzero(bad.to_numpy())[0])
            raise ScoreFileError(
                f"{path}: row {k + 1}: fold {df['fold'].iloc[k]!r} is not an integer (every row needs one)"
            )
        out["fold"] = fold.to_numpy(np.int64)
    if "protocol" in df.columns and set(df["protocol"].astype(str)) <= {"roc", "kfold", "roc+kfold"}:
        out["protocol"] = df["protocol"].astype(str).to_numpy()
    out["line" if fmt == "csv" else "row"] = np.arange(len(out), dtype=np.int64) + (2 if fmt == "csv" else 1)
    return out, extra


def _pair_scores(df: pd.DataFrame, path: Path) -> PairScores:
    groups = {}
    if "group1" in df.columns and "group2" in df.columns:
        ga, gb = _strings(df["group1"]), _strings(df["group2"])
        assert ga is not None and gb is not None
        groups["group"] = (np.where(ga == "", None, ga), np.where(gb == "", None, gb))  # empty: unknown
    sa, sb = _subjects(df, path)
    read = df["score_read"].to_numpy(np.float64) if "score_read" in df.columns else None
    return PairScores(
        df["score"].to_numpy(np.float64),
        df["label"].to_numpy(bool),
        sa,
        sb,
        _strings(df.get("item1")),
        _strings(df.get("item2")),
        groups,  # type: ignore[arg-type]
        None if read is None or np.isfinite(read).all() else read,
    )


def _where(df: pd.DataFrame, path: Path) -> Callable[[int], str]:
    """Where row ``k`` of a read frame is in its file: ``file:line`` (text) or ``file row k`` (Parquet)."""
    if "line" in df.columns:
        lines = df["line"].to_numpy()
        return lambda k: f"{path.name}:{lines[k]}"
    rows = df["row"].to_numpy()
    return lambda k: f"{path.name} row {rows[k]}"


def _repeats(
    df: pd.DataFrame, sets: list[np.ndarray], path: Path, fmt: str, policy: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """The rows counted (bool ``[R]``) and ``meta["duplicate_pairs"]``: repeats found within each row set of
    ``sets`` (the ROC rows; the k-fold-only rows): rows with both sides' subject and item (in either order;
    bob4: in order) and the score equal."""
    keep = np.ones(len(df), bool)
    if "item1" not in df.columns or "item2" not in df.columns:
        return keep, {
            "policy": policy,
            "checked": False,
            "reason": "the file names no items (item1, item2): repeated comparisons cannot be told apart",
        }
    s1 = df["subject1"].to_numpy(object) if "subject1" in df.columns else np.full(len(df), "", object)
    s2 = df["subject2"].to_numpy(object) if "subject2" in df.columns else np.full(len(df), "", object)
    # The score is part of the key: a comparison listed again has the same score (cosine is symmetric), while an
    # item column that names a model or subject (bob4's claimed_id; a score run's table of a bob4 file) lists
    # distinct comparisons under one name, with distinct scores.
    score = "\0" + df["score"].to_numpy(np.float64).astype(str).astype(object)
    side_a, side_b = repeats.codes(
        s1 + "\0" + df["item1"].to_numpy(object) + score, s2 + "\0" + df["item2"].to_numpy(object) + score
    )
    where = _where(df, path)
    item1, item2 = df["item1"].to_numpy(object), df["item2"].to_numpy(object)
    # a row with an empty item on a side cannot be told from another comparison: never called a repeat
    named = ~(pd.isna(df["item1"]).to_numpy() | pd.isna(df["item2"]).to_numpy() | (item1 == "") | (item2 == ""))
    reports = []
    for rows in sets:
        rows = rows[named[rows]]
        if not len(rows):
            continue
        r = repeats.find_repeats(
            side_a[rows],
            side_b[rows],
            df["label"].to_numpy(bool)[rows],
            policy=policy,
            ordered=fmt == "bob4",
            describe=lambda k, rows=rows: f"{item1[rows[k]]} & {item2[rows[k]]}",
            row_name=lambda k, rows=rows: where(int(rows[k])),
            source=str(path),
        )
        keep[rows[~r.keep]] = False
        reports.append(r.report)
    return keep, repeats.merge_reports(reports, policy)


def load_scores(
    path: str | Path,
    *,
    fmt: str = "auto",
    name: str | None = None,
    duplicate_pairs: str = "once",
    nonfinite_scores: str = "errors",
) -> ScoreSet:
    """Read a score file (or an eval run folder) into a :class:`ScoreSet`.

    Args:
        path: the file, or an eval run folder (its ``pairs.parquet``).
        fmt: one of :data:`FORMATS`.
        name: the set's name in reports (default: the file's stem).
        duplicate_pairs: ``once`` (a pair listed again is counted once) or ``keep``
            (:mod:`fetoolkit.data.repeats`).
        nonfinite_scores: ``errors`` (a non-finite score counts as an error) or ``refuse``
            (:mod:`fetoolkit.data.nonfinite`).

    Raises:
        FileNotFoundError: no such file.
        ScoreFileError: unreadable, wrong columns, a label or score that is not one, a non-finite
            score with ``nonfinite_scores=refuse``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"dataset.format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    repeats.check_policy(duplicate_pairs)
    nonfinite.check_policy(nonfinite_scores)
    run = _finished_run(path)  # a run folder, or its pair table: only a finished run's
    path = _resolve(path)
    fmt = sniff_format(path) if fmt == "auto" else fmt
    extra: dict[str, Any] = {}
    df = _read_bob(path, fmt) if fmt.startswith("bob") else None
    if df is None:
        df, extra = _read_table(path, fmt)
    n_rows = len(df)
    if n_rows == 0:
        raise ScoreFileError(f"{path}: no score rows")
    usable = df["enrolled"].to_numpy(bool) if "enrolled" in df.columns else np.ones(n_rows, bool)
    if "protocol" in df.columns:
        proto = df["protocol"].astype(str)
        in_roc, in_kfold = proto.str.contains("roc").to_numpy(), proto.str.contains("kfold").to_numpy()
    else:
        in_roc = np.ones(n_rows, bool)
        in_kfold = np.ones(n_rows, bool) if "fold" in df.columns else np.zeros(n_rows, bool)
    n_missing = int((~usable & in_roc).sum() + (~usable & in_kfold & ~in_roc).sum())
    if n_missing:
        log.warning(
            "%s: %d of %d rows compare an image that did not enrol in the run; left out and counted (n_missing)",
            path,
            n_missing,
            n_rows,
        )
    sets = [np.flatnonzero(usable & in_roc), np.flatnonzero(usable & in_kfold & ~in_roc)]
    keep, dup_report = _repeats(df, sets, path, fmt, duplicate_pairs)
    used = np.flatnonzero(usable & (in_roc | in_kfold) & keep)
    score = df["score"].to_numpy(np.float64)
    where = _where(df, path)
    try:
        mapped, nf_block = nonfinite.as_errors(
            score[used],
            df["label"].to_numpy(bool)[used],
            policy=nonfinite_scores,
            source=str(path),
            describe=lambda k: where(int(used[k])),
        )
    except nonfinite.NonFiniteScores as e:
        raise ScoreFileError(str(e)) from None
    if nf_block["n_genuine"] or nf_block["n_impostor"]:
        df = df.assign(score_read=score)
        score = score.copy()
        score[used] = mapped
        df["score"] = score
    roc_rows = usable & in_roc & keep
    kf_rows = usable & in_kfold & keep
    roc_df = df[roc_rows].reset_index(drop=True)
    kf_df = df[kf_rows].reset_index(drop=True)
    kfold = folds = None
    if len(kf_df):
        folds = np.unique(kf_df["fold"].to_numpy(np.int64), return_inverse=True)[1].astype(np.int64)
        kfold = _pair_scores(kf_df, path)
        if folds.max() < 1:
            log.warning("%s: the fold column holds one fold: no k-fold accuracy (it needs at least 2)", path)
            kfold = folds = None
    if run is not None and extra.get("pairs_table"):  # a model run's table: the run names the model
        extra["run"] = {k: run.get(k) for k in ("model", "backend", "dataset", "weights_sha256")}
    meta = {
        "path": str(path),
        "format": fmt,
        "sha256": sha256_file(path),
        "n_rows": n_rows,
        "n_roc": int(len(roc_df)),
        "n_kfold": int(len(kf_df)),
        "kfold_is_roc": bool(len(kf_df)) and bool(np.array_equal(roc_rows, kf_rows)),
        "duplicate_pairs": dup_report,
        "nonfinite_scores": nf_block,
        **extra,
    }
    return ScoreSet(name or path.stem, _pair_scores(roc_df, path), kfold, folds, n_missing, meta)


def _bob_token(x: Any, what: str) -> str:
    s = str(x)
    if not s or any(c.isspace() for c in s):
        raise ValueError(f"bob score files are whitespace separated: {what} {s!r} cannot be written")
    return s


def write_bob(path: str | Path, pairs: PairScores, *, columns: int = 4) -> Path:
    """Write comparisons as a bob.bio score file (4 or 5 columns), one line per comparison.

    ``claimed_id`` / ``real_id`` are the two sides' subjects (genuine exactly when equal, which
    bob's readers rely on), ``test_label`` the second side's item, ``model_label`` (5 columns)
    the first side's item.

    Raises:
        ValueError: subjects unknown, a label that disagrees with subject equality, or a name
            holding whitespace.
    """
    if columns not in (4, 5):
        raise ValueError("columns must be 4 or 5")
    if not pairs.has_subjects:
        raise ValueError(
            "bob score files name the subjects of both sides (genuine = same subject); these scores "
            "have no subjects (a CSV or .bin run): write CSV/Parquet instead"
        )
    sa, sb = pairs.subject_a, pairs.subject_b
    assert sa is not None and sb is not None
    same = sa == sb
    if (same != pairs.labels).any():
        k = int(np.flatnonzero(same != pairs.labels)[0])
        raise ValueError(f"comparison {k}: label {bool(pairs.labels[k])} but subjects {sa[k]!r}, {sb[k]!r}")
    item_a = pairs.item_a if pairs.item_a is not None else sa
    item_b = pairs.item_b if pairs.item_b is not None else sb
    scores = pairs.scores if pairs.scores_read is None else pairs.scores_read  # as read: NaN stays NaN
    lines = []
    for k in range(len(pairs)):
        row: Sequence[str] = (
            [_bob_token(sa[k], "subject"), _bob_token(sb[k], "subject"), _bob_token(item_b[k], "item")]
            if columns == 4
            else [
                _bob_token(sa[k], "subject"),
                _bob_token(item_a[k], "item"),
                _bob_token(sb[k], "subject"),
                _bob_token(item_b[k], "item"),
            ]
        )
        lines.append(" ".join([*row, repr(float(scores[k]))]))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path
