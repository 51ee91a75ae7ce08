"""Schemathesis against both services' OpenAPI documents, over HTTP.

It generates requests from each schema (valid and invalid: boundaries, wrong
types, odd unicode, path injection) and checks every answer: never a 5xx, a
status code the document declares, a body that matches its declared schema,
and invalid input rejected. `positive_data_acceptance` is left out: some
valid-looking input is refused by design (a cursor this service did not hand
out, an unknown status name, an Idempotency-Key reused for another body).
The live streams (`.../events`) are left to the SSE tests (test_live.py): a
valid request to one is a stream that does not end.
"""

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
]


@pytest.mark.parametrize("service", ["api", "query"])
def test_every_generated_request_gets_a_documented_answer(urls: Any, service: str, tmp_path: Path) -> None:
    base = getattr(urls, service)
    schemathesis = Path(sys.executable).parent / "st"
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{base}/openapi.json",
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            "150",
            "--request-timeout",
            "30",
            "--exclude-path-regex",
            "/events$",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # its run files stay out of the repository
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
