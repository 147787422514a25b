"""The results contract: one writer (schema_version, strict JSON), one loader that names the file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fetoolkit.results import SCHEMA_VERSION, ResultsError, dumps, incomplete_reason, load_results


def test_written_results_carry_the_schema_and_strict_json(tmp_path: Path) -> None:
    summary = {"eer": float("nan"), "tar_at_far": {"1e-3": math.inf, "1e-1": 0.5}, "complete": True}
    text = dumps(summary)
    data = json.loads(text)  # strict: no NaN tokens
    assert "NaN" not in text and "Infinity" not in text
    assert data == {"eer": None, "tar_at_far": {"1e-3": None, "1e-1": 0.5}, "complete": True, "schema_version": 2}
    (tmp_path / "results.json").write_text(text)
    assert load_results(tmp_path) == data == load_results(tmp_path / "results.json")
    assert incomplete_reason(tmp_path) is None


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "no such file"),
        ('{"eer": 0.1, "comp', "not readable JSON"),
        ('{"eer": 0.1}', 'no "complete": true'),
        ("[1, 2]", 'no "complete": true'),
        (json.dumps({"complete": True, "schema_version": SCHEMA_VERSION + 1}), "upgrade fetoolkit"),
    ],
)
def test_unusable_results_are_refused_naming_the_file(tmp_path: Path, content: str | None, says: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ResultsError, match=says) as err:
        load_results(tmp_path)
    assert str(path) in str(err.value)
    assert says in (incomplete_reason(tmp_path) or "")
