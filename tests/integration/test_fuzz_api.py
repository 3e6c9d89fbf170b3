"""The whole OpenAPI schema fuzzed with schemathesis against a real server, with the keys of
two users: zero 5xx, zero responses that break the schema, zero cross-user reads.

Alice owns a run, a deployment and a dataset, each named with a marker. Every operation is
fuzzed three ways, with inputs that fit the schema and inputs that break it: as bob with
generated values, as alice on her own ids, and as bob holding alice's ids (as if guessed or
leaked), which must answer 404 and never show a marker of alice's. Then a stateful pass follows the links schemathesis infers between
operations. Bounded: ``FUZZ_EXAMPLES`` examples per operation and way, no deadline.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra: pip install -e '.[dev]'")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from ..conftest import Backend  # noqa: E402
from .models import Regressor  # noqa: E402

# Per operation, generation mode and way: about 1,000 requests in all (AIAAS_FUZZ_EXAMPLES=50: deeper).
FUZZ_EXAMPLES = int(os.environ.get("AIAAS_FUZZ_EXAMPLES", "2"))
MARK = "zq7alice"  # in the name of everything alice owns: never in an answer to bob
# Destructive on alice's own resources (the other ways still fuzz them).
OWN_IDS_SKIP = {("DELETE", "/v1/deployments/{name}"), ("DELETE", "/v1/datasets/{name}")}
# Names are per user: bob may start an upload of a dataset of his own under alice's name.
CREATES_BY_NAME = {("POST", "/v1/datasets/{name}/uploads")}
FUZZ_SETTINGS = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])


@dataclass
class Fuzzed:
    backend: Backend
    keys: dict[str, str]
    ids: dict[str, str]  # path parameter -> alice's value
    requests: int = 0
    operations: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    # Quotas bound what the fuzzer can start (a deployment it scales is real replica processes).
    b = Backend(tmp_path_factory.mktemp("fuzz"), slots=1, env={
        "AIAAS_QUOTA_DEPLOYMENTS": "2", "AIAAS_QUOTA_REPLICAS": "2", "AIAAS_QUOTA_RUNS_QUEUED": "5"}).start()
    try:
        keys = {"alice": b.new_key("alice"), "bob": b.new_key("bob")}
        alice = b.client(keys["alice"])
        run = alice.train(Regressor(), max_epochs=1, name=f"{MARK}-run").wait(timeout=300)
        dep = run.deploy(f"{MARK}-dep", replicas=1)
        dep.wait_ready(timeout=300)
        alice.upload(f"{MARK}-data", np.arange(64, dtype=np.float32).reshape(16, 4), progress=False)
        state = Fuzzed(b, keys, {"run_id": run.id, "deployment": dep.name, "dataset": f"{MARK}-data"})
        yield state
        print(f"\nfuzzed: {state.requests} requests, {len(state.operations)} distinct operations, "
              f"statuses {dict(sorted(state.statuses.items()))}")
    finally:
        b.close()


@pytest.fixture(scope="module")
def api_schema(fuzzed: Fuzzed):  # type: ignore[no-untyped-def]
    schema = schemathesis.openapi.from_url(fuzzed.backend.url + "/openapi.json")
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    return schema


@pytest.fixture(params=["bob", "alice-own-ids", "bob-alices-ids"])
def way(request: pytest.FixtureRequest) -> str:
    return request.param


def _alices_ids(case, fuzzed: Fuzzed) -> bool:  # type: ignore[no-untyped-def]
    """Put alice's ids into the case's path; False when the operation takes none."""
    params = case.path_parameters or {}
    placed = False
    for name in params:
        if name == "run_id":
            params[name], placed = fuzzed.ids["run_id"], True
        elif name == "name":
            kind = "dataset" if case.operation.path.startswith("/v1/datasets") else "deployment"
            params[name], placed = fuzzed.ids[kind], True
    return placed


def _call(case, fuzzed: Fuzzed, user: str):  # type: ignore[no-untyped-def]
    fuzzed.requests += 1
    fuzzed.operations.add(f"{case.operation.method.upper()} {case.operation.path}")
    response = case.call(base_url=fuzzed.backend.url, headers={"Authorization": f"Bearer {fuzzed.keys[user]}"},
                         timeout=30)
    fuzzed.statuses[response.status_code] += 1
    return response


def _check(case, fuzzed: Fuzzed, way: str) -> None:  # type: ignore[no-untyped-def]
    user = way.split("-")[0]
    if way.endswith("ids"):
        if (case.operation.method.upper(), case.operation.path) in OWN_IDS_SKIP and user == "alice":
            return
        if not _alices_ids(case, fuzzed):
            return
    response = _call(case, fuzzed, user)
    assert response.status_code < 500 or response.status_code in (503, 504), (
        f"{case.formatted_path} as {way}: {response.status_code} {response.text[:500]}")
    # Schemathesis's checks: the status is one the schema declares, the body matches its schema...
    # but not "schema-valid data is accepted": a payload must also unpickle, a chunk hash to
    # its digest, a predict body hold numbers, which no schema can say.
    case.validate_response(response, headers={"Authorization": f"Bearer {fuzzed.keys[user]}"},
                           excluded_checks=[positive_data_acceptance])
    if user == "bob" and (case.operation.method.upper(), case.operation.path) not in CREATES_BY_NAME:
        # A refusal may repeat the name bob sent; an answer (2xx) must hold nothing of alice's.
        if response.status_code < 300:
            assert MARK not in response.text, f"bob read alice's data: {case.formatted_path} -> {response.text[:500]}"
        if way == "bob-alices-ids":
            assert response.status_code in (404, 422, 429), (
                f"bob on alice's ids: {case.formatted_path} -> {response.status_code} {response.text[:300]}")


@pytest.mark.timeout(900)
def test_fuzz_every_operation(api_schema, fuzzed: Fuzzed, way: str) -> None:  # type: ignore[no-untyped-def]
    """Each operation, positive and negative (schema-breaking) inputs; every failing operation
    is reported, not only the first."""
    failures = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @FUZZ_SETTINGS
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case) -> None:  # type: ignore[no-untyped-def]
                _check(case, fuzzed, way)

            began = time.monotonic()
            try:
                fuzz()
                print(f"{way} {operation.method.upper()} {operation.path} {mode.value}: "
                      f"{time.monotonic() - began:.1f} s", flush=True)
            except Unsatisfiable:
                continue  # no input breaks this operation's schema (GET /healthz takes none)
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - reported together below
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {str(exc)[:1500]}")
    assert not failures, f"{len(failures)} failing operations as {way}:\n\n" + "\n\n".join(failures)


@pytest.mark.timeout(900)
def test_fuzz_statefully(api_schema, fuzzed: Fuzzed) -> None:  # type: ignore[no-untyped-def]
    """Sequences of calls along the links schemathesis infers (a created deployment's name into
    the operations that take one, ...), as alice, then bob, checked as above."""
    for user in ("alice", "bob"):
        class Machine(api_schema.as_state_machine()):  # type: ignore[misc]
            def get_call_kwargs(self, case):  # type: ignore[no-untyped-def]
                fuzzed.requests += 1
                fuzzed.operations.add(f"{case.operation.method.upper()} {case.operation.path}")
                return {"base_url": fuzzed.backend.url, "timeout": 60,
                        "headers": {"Authorization": f"Bearer {fuzzed.keys[user]}"}}

            def validate_response(self, response, case, additional_checks=None, **kwargs):  # type: ignore[no-untyped-def]
                case.validate_response(response, excluded_checks=[positive_data_acceptance],
                                       transport_kwargs=kwargs or None)

            def after_call(self, response, case):  # type: ignore[no-untyped-def]
                super().after_call(response, case)
                fuzzed.statuses[response.status_code] += 1
                assert response.status_code < 500 or response.status_code in (503, 504), response.text[:500]
                if user == "bob" and response.status_code < 300:
                    assert MARK not in response.text, response.text[:500]

        Machine.run(settings=settings(max_examples=max(2, FUZZ_EXAMPLES // 2), stateful_step_count=6,
                                      deadline=None, derandomize=True, database=None,
                                      suppress_health_check=list(HealthCheck)))
    assert fuzzed.backend.proc is not None and fuzzed.backend.proc.poll() is None


def test_alices_things_survived_the_fuzzing(fuzzed: Fuzzed) -> None:
    alice = fuzzed.backend.client(fuzzed.keys["alice"])
    assert alice.run(fuzzed.ids["run_id"]).status.value == "succeeded"
    assert alice.deployment(fuzzed.ids["deployment"]).name == fuzzed.ids["deployment"]
    assert Path(fuzzed.backend.data_dir / "aiaas.db").exists()
