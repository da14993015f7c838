"""The scoring service on a real local Ray Serve (two scorer replicas) and ``guardrail score --ray`` on Ray Data.

One local Ray instance (two CPUs) serves the module. Load: 2,000 concurrent checks through a
``RemoteScorer``, each compared with a local check of the same text; then the same while one
scorer replica is killed: every check either matches or failed closed, and the guard recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from _servers import free_port, patient_policy, same_vectors, wait_until_up
from ray import serve
from typer.testing import CliRunner

from guardrail import Guard, RemoteScorer, TransformerScorer
from guardrail._cli import app
from guardrail.serving import RaySettings

REPO = Path(__file__).resolve().parent.parent
LOAD = 2_000


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return patient_policy(tmp_path_factory.mktemp("ray"))


@pytest.fixture(scope="module")
def service(cluster: None, patient: Path) -> Iterator[str]:
    """``guardrail serve --ray``'s application: two CPU scorer replicas behind the HTTP ingress."""
    from guardrail._serving.rayserve import run

    settings = RaySettings(port=free_port(), runtime="torch", policies=[str(patient)], scorer_replicas=2,
                           timeout_ms=300_000)  # fmt: skip
    run(settings, blocking=False)
    url = f"http://127.0.0.1:{settings.port}"
    if not wait_until_up(None, f"{url}/readyz", 300):
        pytest.fail("the Ray Serve application was not ready after 300 s", pytrace=False)
    try:
        yield url
    finally:
        with contextlib.suppress(Exception):  # the last test deletes it already
            serve.delete("guardrail")


@pytest.fixture(scope="module")
def answers(data_dir: Path) -> list[tuple[str | None, str]]:
    files = sorted((data_dir / "harm").glob("*.jsonl"))
    rows = [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if 40 < len(r["response"]) < 200]
    return [(r["prompt"] if n % 2 else None, r["response"]) for n, r in enumerate(random.Random(5).sample(rows, LOAD))]


@pytest.fixture(scope="module")
def local(scorer: TransformerScorer, answers: list[tuple[str | None, str]]) -> list[Any]:
    return Guard("default", scorer).check_many([r for _, r in answers], [p for p, _ in answers], timeout_ms=600_000)


def replicas() -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if "guardrail-scorer" in a["name"] and a["namespace"] == "serve"]  # fmt: skip


def load(url: str, policy: Path, answers: list[tuple[str | None, str]], during: Any = None) -> list[Any]:
    scorer = RemoteScorer(url, timeout_ms=300_000, retries=3)
    guard = Guard(policy, scorer)

    async def run() -> list[Any]:
        try:
            return await asyncio.gather(*(guard.acheck(r, p) for p, r in answers))
        finally:
            await scorer.aclose()

    if during is not None:
        threading.Timer(3.0, during).start()
    return asyncio.run(run())


def test_two_replicas_serve_2000_concurrent_checks(service: str, patient: Path, answers: list[Any],
                                                  local: list[Any]) -> None:  # fmt: skip
    assert len(replicas()) == 2
    started = time.perf_counter()
    got = load(service, patient, answers)
    elapsed = time.perf_counter() - started
    assert [v.error for v in got] == [None] * LOAD
    assert same_vectors(got, local)
    print(f"\nRay Serve, 2 replicas: {LOAD} concurrent checks in {elapsed:.1f} s ({LOAD / elapsed:.0f}/s)")


def test_a_replica_killed_mid_load_loses_nothing_that_does_not_fail_closed(
    service: str, patient: Path, answers: list[Any], local: list[Any]
) -> None:
    victim = replicas()[0]
    got = load(service, patient, answers, during=lambda: ray.kill(ray.get_actor(victim, namespace="serve")))
    failed = [v for v in got if v.error is not None]
    assert all(v.decision == "block" for v in failed)  # whatever failed, failed closed
    served = [(v, w) for v, w in zip(got, local) if v.error is None]
    assert same_vectors([v for v, _ in served], [w for _, w in served])  # and nothing crossed
    assert len(failed) < LOAD // 10, [v.error for v in failed[:3]]
    print(f"\nreplica killed mid-load: {len(served)} served, {len(failed)} failed closed")
    # The guard recovers: Serve replaces the replica, and checks pass through again.
    deadline = time.monotonic() + 120
    while len(replicas()) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    again = load(service, patient, answers[:50])
    assert same_vectors(again, local[:50])


def test_score_on_ray_data_writes_what_score_writes(cluster: None, tmp_path: Path, answers: list[Any]) -> None:
    with contextlib.suppress(Exception):  # free the two CPUs for the actors (when the serving tests ran)
        serve.delete("guardrail")
    rows = [{"id": n, "prompt": p, "response": r, "meta": {"n": [n]}} for n, (p, r) in enumerate(answers * 2)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    runner = CliRunner()
    plain = runner.invoke(app, ["score", str(source), str(tmp_path / "plain.jsonl"), "-p", "default"])
    assert plain.exit_code == 0, plain.output
    scaled = runner.invoke(app, ["score", str(source), str(tmp_path / "ray.jsonl"), "-p", "default", "--ray",
                                 "--actors", "2"])  # fmt: skip
    assert scaled.exit_code == 0, scaled.output
    assert f"scored {len(rows)} responses, 0 failed" in scaled.output and "rows/s" in scaled.output
    want = [json.loads(line) for line in (tmp_path / "plain.jsonl").read_text().splitlines()]
    got = [json.loads(line) for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert [r["id"] for r in got] == [r["id"] for r in want] == [r["id"] for r in rows]  # every row, in order
    assert [r["meta"] for r in got] == [r["meta"] for r in rows]  # the other fields kept as they were
    assert [r["decision"] for r in got] == [r["decision"] for r in want]
    # Batches are cut differently on the actors: padding moves float rounding, never more than that.
    assert [r["scores"] is None for r in got] == [r["scores"] is None for r in want]  # none: all another language
    pairs = [(g["scores"], w["scores"]) for g, w in zip(got, want) if g["scores"] is not None]
    assert max(abs(g[k] - w[k]) for g, w in pairs for k in g) < 1e-3
