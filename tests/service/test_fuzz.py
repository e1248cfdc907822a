"""Fuzzing the API with schemathesis against its own OpenAPI document, as `schemathesis run
--checks all` does: every check schemathesis offers (a server error, a status, content type, header
or body the document does not state, valid data refused, invalid data accepted, a missing required
header or an unsupported method not refused, an ignored key, use after delete, ...) over every
operation, in its examples, coverage and fuzzing phases, and in stateful sequences that follow the
links schemathesis infers between operations (a created job's id into GET, cancel, delete, ...).

The number of examples is bounded (well under two minutes on two cores). Authentication is on, as
served: every generated request carries an admin key, so the fuzzer reaches every route's own
checks rather than stopping at the 401 (and `ignored_auth` sends some without it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import pytest
import schemathesis
from harness import TINY, Service, open_service, write_corpus
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

from app.auth import keys
from app.store.pagination import encode_cursor

ADMIN_KEY: list[str] = []  # the admin key every generated request carries, set by the `fuzzed` fixture
PHASES = ("examples", "coverage", "fuzzing", "stateful")
# The event stream of a job that never ends (no worker runs here) would never answer.
SKIPPED_PATHS = r"/events$"

# A page cursor is opaque: only what `encode_cursor` makes is one (a position: a time and an id),
# which the document says with its own format; any position is valid, whether or not a row is there.
schemathesis.openapi.format(
    "page-cursor",
    st.builds(encode_cursor, st.datetimes(timezones=st.just(UTC)), st.text(max_size=100)),
)

# Where a check cannot apply, it is set aside for that one operation only, with the reason.
OPERATIONS: list[dict[str, Any]] = [
    {
        # Not ready while no worker heartbeats (none runs here): the documented 503 is the answer.
        "include-path": "/readyz",
        "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}},
    },
]
OPERATIONS.append(
    {
        # `key` is a list of any strings (a key no job records filters to nothing): schemathesis' boolean
        # "invalid" value reaches the server as the string "true", a valid item, and is rightly taken.
        "include-method": "GET",
        "include-path": "/v1/jobs/{job_id}/metrics",
        "checks": {"negative_data_rejection": {"enabled": False}},
    }
)
# `positive_data_acceptance` sends bodies the document allows and wants them taken. These operations
# rightly refuse some of those with a 422 for rules JSON Schema (as generated from) cannot state, so
# for them alone a 422 passes the check (any other refusal still fails it, and every other check runs):
# - POST /v1/jobs: the dataset must exist (a body reference, so 422, not 404), and `overrides` holds
#   config fields whose valid values depend on the preset and on each other (checked by the config).
# - POST /v1/datasets/builtin and POST /v1/datasets: cross-field rules (tokenizer_vocab_size only for
#   bpe and unigram and within the tokenizer's bounds, min_count only for word-level tokenizers, a
#   tokenizer and the deprecated convention that disagree), a corpus root's path must exist, and an
#   uploaded split must hold words (an empty or blank file has none).
# - POST /v1/scorings: a file or a dataset split, not both and not neither, and the model must exist.
# - POST /v1/generate and the completions: n and max_tokens are bounded by server settings
#   (LSTMLM_MAX_GENERATE_N, ...), not by the document; and the coverage phase sends the seed's
#   maximum 2**63-1 through a float, 9223372036854775999, which is over it (the server is right).
REFUSES_WITH_RULES_OF_ITS_OWN = [
    ("POST", "/v1/jobs"),
    ("POST", "/v1/datasets/builtin"),
    ("POST", "/v1/datasets"),
    ("POST", "/v1/scorings"),
    ("POST", "/v1/generate"),
    ("POST", "/v1/completions"),
    ("POST", "/models/{model}/v1/completions"),
]
OPERATIONS += [
    {
        "include-method": method,
        "include-path": path,
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]}
        },
    }
    for method, path in REFUSES_WITH_RULES_OF_ITS_OWN
]


def engine_config(secret: str, phases: tuple[str, ...], examples: int) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": 1,
            "headers": {"Authorization": f"Bearer {secret}"},
            "generation": {"max-examples": examples},
            "phases": {phase: {"enabled": phase in phases} for phase in PHASES},
            "checks": {"enabled": True, "max_response_time": 30},
            "operations": OPERATIONS,
            "workers": 1,
            "suppress-health-check": ["all"],
        }
    )


def failures_of(schema: Any) -> list[str]:
    """Run schemathesis' engine over `schema`: every failed check and every error, readable."""
    found: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.status in (Status.FAILURE, Status.ERROR):
            for case_id, results in event.recorder.checks.items():
                for result in results:
                    if result.failure_info is None:
                        continue
                    case = event.recorder.cases[case_id].value
                    interaction = event.recorder.interactions.get(case_id)
                    response = interaction.response if interaction is not None else None
                    answer = f"{response.status_code} {response.content[:300]!r}" if response is not None else "-"
                    failure = result.failure_info.failure
                    found.append(
                        f"[{event.phase}] {result.name} {case.method} {case.path}: {failure.title}\n"
                        f"  {str(failure.message)[:300]}\n  path={case.path_parameters} query={case.query} "
                        f"body={str(case.body)[:300]}\n  answer={answer}"
                    )
        elif isinstance(event, events.NonFatalError):
            found.append(f"error: {event.info.title}: {event.info.message[:500]}")
        elif isinstance(event, events.FatalError):
            found.append(f"fatal: {event.exception!r}")
    return found


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service with a dataset and a queued job, so generated ids can meet real ones."""
    tmp = tmp_path_factory.mktemp("fuzz")
    service, close = open_service(tmp, auth=True, corpus_roots={"tiny": write_corpus(tmp / "roots" / "tiny")})
    _, secret = keys.create_key(service.engine, "fuzzer", "admin")
    ADMIN_KEY.append(secret)
    service.client.headers.update({"Authorization": f"Bearer {secret}"})
    assert service.client.get("/v1/jobs", headers={"Authorization": "Bearer lsk_wrong"}).status_code == 401
    dataset = service.upload(write_corpus(tmp / "corpus"))
    service.client.post("/v1/jobs", json={"dataset_id": dataset["id"], "preset": "test", "overrides": TINY})
    yield service
    close()


def load(fuzzed: Service, phases: tuple[str, ...], examples: int) -> Any:
    config = engine_config(ADMIN_KEY[0], phases, examples)
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed.client.app, config=config)
    return schema.exclude(path_regex=SKIPPED_PATHS)


def test_every_operation_answers_generated_requests_as_documented(fuzzed: Service) -> None:
    schema = load(fuzzed, ("examples", "coverage", "fuzzing"), examples=10)
    assert len([result.ok() for result in schema.get_all_operations()]) > 20
    failures = failures_of(schema)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)


def test_stateful_sequences_answer_as_documented(fuzzed: Service) -> None:
    failures = failures_of(load(fuzzed, ("stateful",), examples=15))
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)


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
