"""Schemathesis against both services' OpenAPI documents, over HTTP.

It generates requests from each schema (valid and invalid: boundaries, wrong
types, odd unicode, path injection) and checks every answer: never a 5xx, a
status code the document declares, a body that matches its declared schema,
and invalid input rejected. `positive_data_acceptance` is left out: some
valid-looking input is refused by design (a cursor this service did not hand
out, an unknown status name, an Idempotency-Key reused for another body).
The live streams (`.../events`) are left to the SSE tests (test_live.py): a
valid request to one is a stream that does not end.

Each service is fuzzed three times: in AUTH_MODE=none, and in oidc with a
service client's token from Ory Hydra (plus schemathesis' `ignored_auth`: the
same requests without the token must be refused) and without one (every
answer a documented 401).
"""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

CHECKS = [
    # Not `not_a_server_error`: a 503 (Kafka slower than KAFKA_SEND_TIMEOUT_MS on a busy
    # machine) is a documented answer. An undocumented one, a 500, fails this check:
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
]


@pytest.fixture(scope="module")
def fuzzed(request: pytest.FixtureRequest, own_stack_factory: Any) -> Iterator[Any]:
    """A stack of its own: the fuzzed batches leave a backlog no other test should wait behind."""
    with own_stack_factory(request, "fuzz") as running:
        yield running


@pytest.fixture(scope="module")
def fuzzed_oidc(request: pytest.FixtureRequest, own_stack_factory: Any) -> Iterator[Any]:
    """The same in AUTH_MODE=oidc, on the session's Hydra."""
    with own_stack_factory(request, "fuzz-oidc", oidc=True) as running:
        yield running


@pytest.mark.timeout(900)
@pytest.mark.parametrize("auth", ["none", "oidc with a token", "oidc without a token"])
@pytest.mark.parametrize("service", ["api", "query"])
def test_every_generated_request_gets_a_documented_answer(
    request: pytest.FixtureRequest, service: str, auth: str, tmp_path: Path
) -> None:
    checks, extra, examples = list(CHECKS), [], 150
    if auth == "none":
        base = getattr(request.getfixturevalue("fuzzed"), service)
    else:
        base = getattr(request.getfixturevalue("fuzzed_oidc"), service)
        examples = 40  # the none run covers the inputs; these cover the access control
        if auth == "oidc with a token":
            token = request.getfixturevalue("provider").service_token()
            extra = ["--header", f"Authorization: Bearer {token}"]
            checks.append("ignored_auth")
    schemathesis = Path(sys.executable).parent / "st"
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{base}/openapi.json",
            *extra,
            "--checks",
            ",".join(checks),
            "--max-examples",
            str(examples),
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
