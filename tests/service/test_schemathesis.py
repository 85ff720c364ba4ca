"""The BUILT bento fuzzed from its own OpenAPI document (``/docs.json``) by schemathesis: every
operation, valid and invalid inputs, with the write token and with no token at all. Whatever is
sent, the service answers no 5xx and only what the document says (status code, content type,
body schema). The served instance is the session's (tests/conftest.py ``e2e_service``).

The run is bounded and repeatable: ``MAX_EXAMPLES`` cases per operation and generation mode,
derandomized, no shrinking. The figures (cases, failures) are printed and written to
``schemathesis.json`` in the test's tmp directory."""

from __future__ import annotations

import json

import pytest

from tests.conftest import bearer

MAX_EXAMPLES = 50  # per operation and generation mode (positive, negative)


def fuzz(base_url: str, headers: dict | None) -> dict:
    """Run every operation of the served document; {"cases", "operations", "failures": {...}}."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
        content_type_conformance,
    ]

    def exercise(operation, mode) -> None:
        @settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case):
            out["cases"] += 1
            try:
                case.call_and_validate(
                    base_url=base_url, headers=headers, checks=checks, timeout=60
                )
            except FailureGroup as group:
                for failure in group.exceptions:
                    key = f"{operation.label} [{mode.value}] {failure.title}"
                    out["failures"].setdefault(key, str(failure)[:2000])

        try:
            run()
        except Unsatisfiable:
            # an operation without any input (GET /healthz, ...) has no invalid input to send
            assert mode == GenerationMode.NEGATIVE, operation.label
            out["no_negative_cases"].append(operation.label)

    schema = schemathesis.openapi.from_url(f"{base_url}/docs.json")
    out: dict = {"cases": 0, "operations": 0, "failures": {}, "no_negative_cases": []}
    for result in schema.get_all_operations():
        operation = result.ok()  # an operation the document cannot describe fails here
        out["operations"] += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            exercise(operation, mode)
    return out


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_the_fuzzed_service_answers_no_5xx_and_only_what_its_document_says(e2e_service, tmp_path):
    base_url = str(e2e_service.base_url).rstrip("/")
    figures = {
        "with_token": fuzz(base_url, bearer()),
        "without_token": fuzz(base_url, None),
    }
    (tmp_path / "schemathesis.json").write_text(json.dumps(figures, indent=2))
    for name, run in figures.items():
        print(
            f"schemathesis {name}: {run['cases']} cases over {run['operations']} operations, "
            f"{len(run['failures'])} failures"
        )
    for run in figures.values():
        assert run["operations"] >= 10 and run["cases"] >= 10 * MAX_EXAMPLES
    failures = {
        f"{name}: {k}": v for name, run in figures.items() for k, v in run["failures"].items()
    }
    assert not failures, json.dumps(failures, indent=2)
