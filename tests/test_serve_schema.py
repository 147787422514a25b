"""Property-based requests generated from the service's own ``/openapi.json`` (schemathesis), against
the real server process; bounded in examples per route, in the slow suite (``make test-slow``).

Every generated request (JSON, multipart and raw bodies, query flags, each field's limits) must get a
typed answer below 500, and the server must stay healthy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from fetoolkit.serve import process as serve_process
from fetoolkit.serve.process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = serve_process.start_server(["model=arcface"], tmp_path_factory.mktemp("schema"), timeout=240.0, cwd=ROOT)
    try:
        yield srv
    finally:
        srv.stop()


def test_generated_requests_get_typed_answers(server: ServerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/extract-embedding", "/api/extract-embedding/batch", "/api/verify"}
    seen: dict[int, int] = {}
    for op in operations:

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def call(case: schemathesis.Case) -> None:
            response = case.call_and_validate(base_url=server.url, checks=[not_a_server_error], timeout=60)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, response.text[:300]
            if response.status_code >= 400:
                body = response.json()
                assert body["success"] is False and body["error_type"] and body["message"], body

        call()
    assert httpx.get(f"{server.url}/api/health", timeout=10).status_code == 200
    assert any(400 <= s < 500 for s in seen), seen  # the generated bodies reached the validation
