"""Fuzzing the API with schemathesis against its own OpenAPI document: generated requests, one
operation at a time and in stateful sequences that follow the links schemathesis infers between
operations (a created job's id into GET, cancel, delete, ...). Every answer must be below 500 and
conform to the document: its status is documented, its content type and body match the schema.

The number of examples is bounded (about a minute on two cores). Authentication is on, as served:
every generated request carries an admin key (`AUTH_HEADERS`), so the fuzzer reaches every route's
own checks rather than stopping at the 401.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from harness import TINY, Service, open_service, write_corpus
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from app.auth import keys

AUTH_HEADERS: dict[str, str] = {}  # the admin key's header, set by the `fuzzed` fixture
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
# The event stream of a job that never ends (no worker runs here) would never answer.
SKIPPED_PATHS = r"/events$"


def assert_no_server_error(response: Any, case: Any) -> None:
    """Below 500; the only 5xx allowed is a documented 503 (not ready, or busy with Retry-After)."""
    status = response.status_code
    documented = str(status) in case.operation.definition.raw.get("responses", {})
    assert status < 500 or (status == 503 and documented), (
        f"{case.method} {case.formatted_path}: {status} {response.text[:500]}"
    )


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service with a dataset and a queued job, so generated ids can meet real ones."""
    tmp = tmp_path_factory.mktemp("fuzz")
    service, close = open_service(tmp, auth=True, corpus_roots={"tiny": write_corpus(tmp / "roots" / "tiny")})
    _, secret = keys.create_key(service.engine, "fuzzer", "admin")
    AUTH_HEADERS["Authorization"] = f"Bearer {secret}"
    service.client.headers.update(AUTH_HEADERS)
    assert service.client.get("/v1/jobs", headers={"Authorization": "Bearer lsk_wrong"}).status_code == 401
    dataset = service.upload(write_corpus(tmp / "corpus"))
    service.client.post("/v1/jobs", json={"dataset_id": dataset["id"], "preset": "test", "overrides": TINY})
    yield service
    close()


@pytest.fixture(scope="module")
def api_schema(fuzzed: Service) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed.client.app).exclude(path_regex=SKIPPED_PATHS)


def test_every_operation_answers_generated_requests_as_documented(api_schema: Any) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 20
    for operation in operations:

        @FUZZ
        @given(case=operation.as_strategy())
        def answers(case: Any) -> None:
            response = case.call(headers=AUTH_HEADERS)
            assert_no_server_error(response, case)
            case.validate_response(response, checks=CHECKS)

        answers()


def test_stateful_sequences_answer_as_documented(api_schema: Any) -> None:
    machine = api_schema.as_state_machine()

    class Sequences(machine):  # type: ignore[misc,valid-type]
        def call(self, case: Any, **kwargs: Any) -> Any:
            return case.call(headers={**AUTH_HEADERS, **kwargs.pop("headers", {})}, **kwargs)

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            assert_no_server_error(response, case)
            case.validate_response(response, checks=CHECKS)

    Sequences.run(settings=settings(FUZZ, max_examples=15, stateful_step_count=6))


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def test_a_method_a_path_does_not_serve_gets_405_with_every_method_it_does(fuzzed: Service) -> None:
    """Over every path of the document: each other method is a problem+json 405 whose `Allow` lists
    exactly the methods the document gives the path (HEAD and OPTIONS are not served implicitly)."""
    document = fuzzed.client.get("/openapi.json").json()
    for template, item in document["paths"].items():
        path = re.sub(r"\{[^}]+\}", "x1", template)
        documented = {method.upper() for method in item if method.upper() in METHODS}
        for method in sorted(set(METHODS) - documented):
            response = fuzzed.client.request(method, path)
            assert response.status_code == 405, (method, path, response.status_code, response.text[:200])
            allow = {m.strip() for m in response.headers["allow"].split(",")}
            assert allow == documented, (method, path, allow)
            assert response.headers["content-type"] == "application/problem+json"
            if method != "HEAD":  # a HEAD answer has no body
                assert response.json()["status"] == 405
    # Literal paths beside a parametrised one are their own resources, not ids.
    response = fuzzed.client.delete("/v1/datasets/roots")
    assert (response.status_code, response.headers["allow"]) == (405, "GET")
    assert fuzzed.client.get("/v1/datasets/builtin").headers["allow"] == "POST"
    # Routes outside the document answer the same way.
    response = fuzzed.client.post("/openapi.json")
    assert (response.status_code, response.headers["allow"]) == (405, "GET, HEAD")


def test_the_document_states_problem_json_for_every_error(fuzzed: Service) -> None:
    document = fuzzed.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            if "requestBody" in operation:
                assert {"400", "413", "422"} <= set(responses), (method, path)
            for code, response in responses.items():
                if code[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"], (method, path, code)


def test_request_schemas_carry_the_server_bounds(fuzzed: Service) -> None:
    schemas = fuzzed.client.get("/openapi.json").json()["components"]["schemas"]
    sentences = schemas["ScoreRequest"]["properties"]["sentences"]
    assert sentences["minItems"] == 1 and sentences["items"] == {"type": "string"}  # an empty one is a blank line
    stop = next(s for s in schemas["GenerateRequest"]["properties"]["stop"]["anyOf"] if s.get("type") == "array")
    assert stop["items"]["minLength"] == 1 and stop["maxItems"] >= 1
