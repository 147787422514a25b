"""Listing what a data set's reader noticed, in the log, without flooding it.

A data set of 50,000 images can hold tens of thousands of records of one kind (identities of one
image, skipped files): every record goes to ``results.json``; the log gets the first few of each
kind and one line with the count and where the rest are.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

#: Records of one kind written to the log one by one; the rest are counted in one line.
LOG_FIRST = 5


def log_records(
    log: logging.Logger, records: Sequence[dict[str, str]], where: str, *, first: int = LOG_FIRST, prefix: str = "data"
) -> None:
    """Warn about the first ``first`` ``{path, reason}`` records, then one line for the rest.

    Args:
        log: the reader's logger.
        records: the records (all of them are in ``results.json``).
        where: where the full list is, e.g. ``results.json data.skipped``.
        first: how many records get a line of their own.
        prefix: the start of each line.
    """
    for item in records[:first]:
        log.warning("%s: %s: %s", prefix, item["path"], item["reason"])
    if len(records) > first:
        log.warning("%s: ... and %d more like these (%d in all: %s)", prefix, len(records) - first, len(records), where)


def printable_path(path: object) -> str:
    """``path`` as text that can be written as UTF-8: a file name's undecodable bytes (Python keeps
    them as lone surrogates) appear as ``\\xNN``."""
    text = str(path)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def is_utf8_name(path: object) -> bool:
    """True when ``path``'s text holds no undecodable byte (it can be written to JSON, Parquet, Markdown)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
