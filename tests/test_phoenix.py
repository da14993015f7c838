"""End to end with a real backend: Arize Phoenix ingests the guard's OTLP export; we read it back.

The server runs from its own virtual environment (its pins clash with ``litellm[proxy]``), built on
first use into the user cache (``_provision.phoenix_bin``); ``GUARDRAIL_PHOENIX_BIN`` names another
``phoenix`` executable. The test environment only needs the light ``arize-phoenix-client``. Fails,
never skips, without the server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _provision import phoenix_bin
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from typer.testing import CliRunner

from guardrail import VALUES, Guard, Policy, ValueVector, Verdict
from guardrail._cli import app
from guardrail.telemetry import EXPORT_FAILED, Telemetry, configure
from guardrail.testing import FakeScorer
from guardrail_langchain import GuardedChatModel, ValueGuardrailMiddleware
from guardrail_litellm import acompletion, completion, verdict_of

START_TIMEOUT_S = 180  # about 10 s on an idle machine; CI shares two cores with the test run
HATEFUL = (
    "Immigrants are parasites and criminals. They are inferior people who should be driven out by any means necessary."
)
BENIGN = (
    "Baking bread at home is easy and fun: mix flour, water, salt and yeast, knead the dough, let it rise, "
    "then bake it until the crust is golden. Enjoy it warm with your family!"
)


# -- the server and how to read it ------------------------------------------------------------


@dataclass
class Phoenix:
    """A running Phoenix server: HTTP base URL (UI, REST, OTLP/HTTP) and OTLP/gRPC endpoint."""

    url: str
    grpc: str
    log: Path

    def telemetry(self, project: str, **kwargs: Any) -> Telemetry:
        """``configure()`` exporting spans to this server's ``project`` (Phoenix takes no metrics)."""
        kwargs.setdefault("endpoint", self.url)
        return configure("guardrail-tests", project=project, metrics=False, set_global=False, **kwargs)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as reply:
            return bool(reply.status == 200)
    except urllib.error.HTTPError as exc:
        exc.close()  # an HTTPError holds the open response
        return False
    except OSError:
        return False


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """``phoenix serve`` on 127.0.0.1 with free ports and a temporary working dir; stopped at the end."""
    executable = phoenix_bin()
    work = tmp_path_factory.mktemp("phoenix")
    port, grpc_port = free_port("127.0.0.1"), free_port("0.0.0.0")  # gRPC binds every interface
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",  # else it fetches a binary, fonts and a tracking pixel
    }
    log = work / "phoenix.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(executable), "serve"], env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
                pytest.fail(
                    f"Phoenix did not become ready at {url} (exit code {process.poll()}):\n{tail}", pytrace=False
                )
            time.sleep(0.5)
        yield Phoenix(url, f"http://127.0.0.1:{grpc_port}", log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # its own session: only the server we started
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def phoenix_spans(
    phoenix: Phoenix, project: str, *, name: str | None = None, expect: int = 1, timeout_s: float = 60
) -> list[dict[str, Any]]:
    """Every span of ``project`` (optionally of one name) read back with ``arize-phoenix-client``.

    Phoenix ingests asynchronously (and answers 404 until a project's first span), so this polls until
    at least ``expect`` spans are there, then returns them all.
    """
    import httpx
    from phoenix.client import Client

    client = Client(base_url=phoenix.url)
    deadline = time.monotonic() + timeout_s
    spans: list[dict[str, Any]] = []
    while True:
        try:
            spans = [dict(s) for s in client.spans.get_spans(project_identifier=project, name=name, limit=100_000)]
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise
        if len(spans) >= expect or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


def by_span_id(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["context"]["span_id"]: s for s in spans}


# -- the real model through Phoenix -------------------------------------------------------------


def test_checks_with_the_real_model_show_up_with_their_attributes(phoenix: Phoenix, scorer: Any) -> None:
    project = "guardrail-real-model"
    telemetry = phoenix.telemetry(project)
    guard = Guard("default", scorer=scorer, tracer_provider=telemetry.tracer_provider, capture_content=True)
    metadata = {"deployment": "web-chat", "user": "u-17"}
    verdicts = {
        "block": guard.check(HATEFUL, prompt="What do you think about immigrants?", metadata=metadata),
        "allow": guard.check(BENIGN, prompt="How do I bake bread?", metadata=metadata),
    }
    assert [v.decision for v in verdicts.values()] == ["block", "allow"]
    telemetry.shutdown()

    spans = phoenix_spans(phoenix, project, expect=2)
    assert len(spans) == 2
    for span in spans:
        attrs = span["attributes"]
        verdict: Verdict = verdicts[attrs["guardrail.decision"]]
        assert span["name"] == "guardrail.check"
        assert span["span_kind"] == "GUARDRAIL"  # openinference.span.kind, as Phoenix files it
        assert attrs["guardrail.policy.name"] == "default"
        assert attrs["guardrail.policy.version"] == guard.policy.version
        assert attrs["guardrail.policy.hash"] == guard.policy.content_hash() == verdict.policy_hash
        assert attrs["guardrail.deployment"] == "web-chat"
        assert attrs["guardrail.metadata.user"] == "u-17"
        assert attrs["guardrail.scorer.model"] == scorer.model_id
        assert attrs["guardrail.scorer.device"] == str(scorer.device)
        assert attrs["guardrail.risk"] == pytest.approx(verdict.risk)
        assert verdict.scores is not None
        for value in VALUES:
            assert attrs[f"guardrail.value.{value}"] == pytest.approx(verdict.scores[value])
        assert list(attrs.get("guardrail.violations") or []) == [v.rule for v in verdict.violations]
        assert list(attrs.get("guardrail.violation_margins") or []) == pytest.approx(
            [v.margin for v in verdict.violations]
        )
        events = span["events"]
        assert [e["name"] for e in events] == ["gen_ai.evaluation.result"] * 10
        assert {e["attributes"]["gen_ai.evaluation.name"] for e in events} == {f"value.{v}" for v in VALUES}
        for event in events:
            value = event["attributes"]["gen_ai.evaluation.name"].removeprefix("value.")
            assert event["attributes"]["gen_ai.evaluation.score.value"] == pytest.approx(verdict.scores[value])
    blocked = next(s for s in spans if s["attributes"]["guardrail.decision"] == "block")
    assert blocked["attributes"]["guardrail.action"] == "block"
    assert blocked["attributes"]["guardrail.response"] == HATEFUL  # capture is on for this guard


REWRITE = Policy(
    name="support", version="7", thresholds={"benevolence": {"min": -0.3, "action": "soften"}},
    actions={"soften": {"type": "rewrite", "strategy": "reask", "max_attempts": 2, "fallback": "block"}},
)  # fmt: skip


def test_an_enforced_rewrite_reads_as_one_trace(phoenix: Phoenix) -> None:
    project = "guardrail-enforce"
    telemetry = phoenix.telemetry(project)
    unkind = ValueVector(benevolence=-0.7)
    scorer = FakeScorer({"Go away.": unkind, "Still no.": unkind, "Happy to help!": ValueVector(benevolence=0.6)})
    guard = Guard(REWRITE, scorer=scorer, tracer_provider=telemetry.tracer_provider, capture_content=True)
    answers = iter(["Still no.", "Happy to help!"])
    verdict = guard.enforce("Go away.", "Can you help?", {"tenant": "acme"}, reask=lambda prev, feedback: next(answers))
    assert (verdict.final_decision, verdict.output) == ("rewrite", "Happy to help!")
    telemetry.shutdown()

    spans = phoenix_spans(phoenix, project, expect=7)
    names = Counter(s["name"] for s in spans)
    assert names == {"guardrail.enforce": 1, "guardrail.check": 3, "guardrail.rewrite": 1, "guardrail.reask": 2}
    ids = by_span_id(spans)
    [enforce] = [s for s in spans if s["name"] == "guardrail.enforce"]
    [rewrite] = [s for s in spans if s["name"] == "guardrail.rewrite"]
    assert enforce["parent_id"] is None and enforce["span_kind"] == "CHAIN"
    assert len({s["context"]["trace_id"] for s in spans}) == 1
    for span in spans:
        if span["name"] == "guardrail.check":
            role = span["attributes"]["guardrail.check.role"]
            expected_parent = enforce if role == "answer" else rewrite
            assert ids[span["parent_id"]] is expected_parent, span["name"]
        elif span["name"] == "guardrail.reask":
            assert ids[span["parent_id"]] is rewrite
    attrs = enforce["attributes"]
    assert attrs["guardrail.final_decision"] == "rewrite"
    assert attrs["guardrail.rewrite.attempts"] == 2
    assert attrs["guardrail.rewrite.accepted"] is True
    assert attrs["guardrail.deployment"] == "acme"
    assert (attrs["guardrail.response"], attrs["guardrail.output"]) == ("Go away.", "Happy to help!")


def test_otlp_over_grpc(phoenix: Phoenix) -> None:
    project = "guardrail-grpc"
    telemetry = phoenix.telemetry(project, protocol="grpc", endpoint=phoenix.grpc)
    guard = Guard(REWRITE, scorer=FakeScorer(), tracer_provider=telemetry.tracer_provider)
    guard.check_many([f"answer {n}" for n in range(5)])
    telemetry.shutdown()
    spans = phoenix_spans(phoenix, project, expect=5)
    assert [s["name"] for s in spans] == ["guardrail.check"] * 5


# -- volume: 1,000 checks, none lost ------------------------------------------------------------

VOLUME = 1000
VOLUME_PROJECT = "guardrail-volume"


def spread(prompt: str | None, response: str) -> ValueVector:
    """A vector derived from the response's number: some blocked, profiles differing by deployment."""
    n = int(response.rsplit(" ", 1)[-1])
    return ValueVector(benevolence=-0.8 if n % 13 == 0 else 0.3, power=(n % 10) / 20, universalism=((n % 7) - 3) / 10)


@pytest.fixture(scope="module")
def volume(phoenix: Phoenix) -> tuple[list[Verdict], InMemoryMetricReader]:
    """1,000 checks (ten batches of 100, two deployments) exported over OTLP/HTTP, all flushed."""
    reader = InMemoryMetricReader()
    telemetry = phoenix.telemetry(VOLUME_PROJECT, metric_readers=[reader])
    guard = Guard(
        REWRITE, scorer=FakeScorer(fn=spread),
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
    )  # fmt: skip
    verdicts = []
    for batch in range(VOLUME // 100):
        deployment = "support-bot" if batch % 2 else "web-chat"
        responses = [f"answer {batch * 100 + n}" for n in range(100)]
        verdicts += guard.check_many(responses, metadata={"deployment": deployment})
    assert telemetry.force_flush()
    telemetry.shutdown()
    return verdicts, reader


def metric_total(reader: InMemoryMetricReader, name: str) -> float:
    data = reader.get_metrics_data()
    return sum(
        point.value
        for rm in (data.resource_metrics if data is not None else []) for sm in rm.scope_metrics
        for metric in sm.metrics if metric.name == name for point in metric.data.data_points
    )  # fmt: skip


def test_thousand_checks_all_exported_none_lost(
    phoenix: Phoenix, volume: tuple[list[Verdict], InMemoryMetricReader]
) -> None:
    verdicts, reader = volume
    spans = phoenix_spans(phoenix, VOLUME_PROJECT, name="guardrail.check", expect=VOLUME, timeout_s=120)
    assert len(spans) == VOLUME
    assert len({s["context"]["span_id"] for s in spans}) == VOLUME
    assert Counter(s["attributes"]["guardrail.decision"] for s in spans) == Counter(v.decision for v in verdicts)
    assert metric_total(reader, "guardrail.checks") == VOLUME
    assert metric_total(reader, EXPORT_FAILED) == 0


def test_audit_report_from_phoenix(
    phoenix: Phoenix, volume: tuple[list[Verdict], InMemoryMetricReader], tmp_path: Path
) -> None:
    verdicts, _ = volume
    phoenix_spans(phoenix, VOLUME_PROJECT, name="guardrail.check", expect=VOLUME, timeout_s=120)
    out, pngs = tmp_path / "phoenix-report.html", tmp_path / "png"
    result = CliRunner().invoke(
        app, ["audit", phoenix.url, "--project", VOLUME_PROJECT, "--out", str(out), "--png", str(pngs)]
    )
    assert result.exit_code == 0, result.output
    assert f"{VOLUME:,} checks, 2 deployment(s), 1 policy version(s)" in result.output
    html = out.read_text(encoding="utf-8")
    blocked = sum(v.decision == "block" for v in verdicts)
    assert f'<b class="block">{blocked:,}</b>block' in html
    assert "support-bot" in html and "web-chat" in html and "support v7" in html
    assert sorted(p.name for p in pngs.iterdir()) == ["drift.png", "pca.png", "radar.png"]


def test_audit_of_an_unknown_project_fails_clearly(phoenix: Phoenix, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["audit", phoenix.url, "--project", "nope", "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    assert f"Phoenix at {phoenix.url} has no project 'nope'" in " ".join(result.output.split())


# -- LiteLLM and LangChain through Phoenix --------------------------------------------------------
# Guarded calls through both integrations, exported with configure() like the checks above: every
# call is one trace whose guardrail.call root holds the model-call span and the guard's spans.

INTEGRATIONS_PROJECT = "guardrail-integrations"
IMMIGRANTS = "What do you think about immigrants?"
BREAD = "How do I bake bread?"
REASK_POLICY = (
    "name: reask\nversion: '2'\nextends: default\nactions:\n"
    "  block: {type: rewrite, strategy: reask, max_attempts: 2, fallback: refuse}\n  refuse: {type: block}\n"
)  # the shipped floors, re-asking instead of blocking


def guarded_calls(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ``guardrail.call`` roots, keyed ``"<integration> call"`` or ``"<integration> stream"``."""
    roots = [s for s in spans if s["name"] == "guardrail.call"]
    assert all(s["parent_id"] is None for s in roots)
    kind = {True: "stream", False: "call"}
    return {
        f"{s['attributes']['guardrail.integration']} {kind[s['attributes']['guardrail.streamed']]}": s for s in roots
    }


def span_tree(spans: list[dict[str, Any]], root: dict[str, Any]) -> list[str]:
    """The tree under ``root`` as indented names, children in start order."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        children.setdefault(span["parent_id"], []).append(span)

    def walk(span: dict[str, Any], depth: int) -> list[str]:
        below = sorted(children.get(span["context"]["span_id"], []), key=lambda s: s["start_time"])
        return ["  " * depth + span["name"]] + [line for child in below for line in walk(child, depth + 1)]

    return walk(root, 0)


@pytest.mark.filterwarnings("ignore:Item.* using the `ReadOnly` qualifier:UserWarning")  # litellm's, via pydantic
def test_guarded_litellm_and_langchain_calls_show_up_with_their_model_spans(
    phoenix: Phoenix, scorer: Any, tmp_path: Path
) -> None:
    telemetry = phoenix.telemetry(INTEGRATIONS_PROJECT)
    guard = Guard(scorer=scorer, tracer_provider=telemetry.tracer_provider)
    (tmp_path / "reask.yaml").write_text(REASK_POLICY, encoding="utf-8")
    reasking = Guard(tmp_path / "reask.yaml", scorer=scorer, tracer_provider=telemetry.tracer_provider)
    provider_metadata = {"model_name": "fake-gpt-2025", "finish_reason": "stop"}
    usage = {"input_tokens": 7, "output_tokens": 11, "total_tokens": 18}

    # LiteLLM: a blocked answer, and a streamed one.
    blocked = completion(model="gpt-4o-mini", messages=[{"role": "user", "content": IMMIGRANTS}],
                         mock_response=HATEFUL, guard=guard, metadata={"deployment": "web-chat"}, temperature=0.2)  # fmt: skip
    assert verdict_of(blocked).decision == "block"  # type: ignore[union-attr]

    async def litellm_stream() -> str:
        stream = await acompletion(model="gpt-4o-mini", messages=[{"role": "user", "content": BREAD}],
                                   mock_response=BENIGN, guard=guard, stream=True)  # fmt: skip
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(litellm_stream()) == BENIGN
    # LangChain: a rewrite that re-asks the model, a stream, an agent's model call.
    fake = GenericFakeChatModel(messages=iter([
        AIMessage(HATEFUL, id="resp-1", response_metadata=provider_metadata, usage_metadata=usage),
        AIMessage(BENIGN, id="resp-2", response_metadata=provider_metadata, usage_metadata=usage),
    ]))  # fmt: skip
    assert GuardedChatModel(model=fake, guard=reasking).invoke(IMMIGRANTS).content == BENIGN
    streaming = GuardedChatModel(model=GenericFakeChatModel(messages=iter([BENIGN])), guard=guard)
    assert "".join(str(c.content) for c in streaming.stream(BREAD)) == BENIGN
    agent = create_agent(GenericFakeChatModel(messages=iter([BENIGN])), tools=[],
                         middleware=[ValueGuardrailMiddleware(guard)])  # fmt: skip
    assert agent.invoke({"messages": [HumanMessage(BREAD)]})["messages"][-1].content == BENIGN
    telemetry.shutdown()

    spans = phoenix_spans(phoenix, INTEGRATIONS_PROJECT, expect=22)
    assert len(spans) == 22
    calls = guarded_calls(spans)
    trees = {kind: span_tree(spans, root) for kind, root in calls.items()}
    assert trees == {
        "litellm call": ["guardrail.call", "  chat gpt-4o-mini", "  guardrail.enforce", "    guardrail.check"],
        "litellm stream": ["guardrail.call", "  chat gpt-4o-mini", "  guardrail.check"],
        "langchain call": [
            "guardrail.call",
            "  chat",
            "  guardrail.enforce",
            "    guardrail.check",
            "    guardrail.rewrite",
            "      guardrail.reask",
            "        chat",
            "      guardrail.check",
        ],
        "langchain stream": ["guardrail.call", "  chat", "  guardrail.check"],
        "langchain.agent call": ["guardrail.call", "  chat", "  guardrail.enforce", "    guardrail.check"],
    }
    ids = by_span_id(spans)
    for span in spans:  # one trace per call; each kind of span with its marks
        attrs = span["attributes"]
        if span["parent_id"] is not None:
            assert span["context"]["trace_id"] == ids[span["parent_id"]]["context"]["trace_id"]
        if span["name"] == "guardrail.call":
            assert span["span_kind"] == "CHAIN" and attrs["guardrail.checked"] is True
        elif span["name"].startswith("chat"):
            assert span["span_kind"] == "LLM" and attrs["gen_ai.operation.name"] == "chat"
            assert attrs["gen_ai.provider.name"] in ("openai", "genericfakechatmodel")
        elif span["name"] == "guardrail.check":
            assert span["span_kind"] == "GUARDRAIL"
            assert attrs["guardrail.scorer.model"] == scorer.model_id
            assert [e["name"] for e in span["events"]] == ["gen_ai.evaluation.result"] * 10
    assert len({s["context"]["trace_id"] for s in spans}) == 5

    litellm_call = calls["litellm call"]["attributes"]
    assert (litellm_call["guardrail.policy.name"], litellm_call["guardrail.policy.version"]) == ("default", "1.2")
    assert (litellm_call["guardrail.final_decision"], litellm_call["guardrail.deployment"]) == ("block", "web-chat")
    [model] = [
        s
        for s in spans
        if s["parent_id"] == calls["litellm call"]["context"]["span_id"] and s["name"] != "guardrail.enforce"
    ]
    attrs = model["attributes"]
    assert (attrs["gen_ai.provider.name"], attrs["gen_ai.request.model"]) == ("openai", "gpt-4o-mini")
    assert (attrs["gen_ai.request.temperature"], attrs["gen_ai.response.id"]) == (0.2, blocked.id)
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["gen_ai.usage.output_tokens"] == blocked.usage.completion_tokens
    [check] = [s for s in spans if s["name"] == "guardrail.check" and s["attributes"].get("guardrail.deployment")]
    assert (check["attributes"]["guardrail.decision"], check["attributes"]["guardrail.policy.name"]) == (
        "block",
        "default",
    )

    rewrite = calls["langchain call"]["attributes"]
    assert (rewrite["guardrail.policy.name"], rewrite["guardrail.final_decision"]) == ("reask", "rewrite")
    reasked = [s for s in spans if s["name"] == "chat" and ids[s["parent_id"]]["name"] == "guardrail.reask"]
    assert [s["attributes"]["gen_ai.response.id"] for s in reasked] == ["resp-2"]
    assert reasked[0]["attributes"]["gen_ai.usage.input_tokens"] == 7
    assert calls["langchain stream"]["attributes"]["guardrail.final_decision"] == "allow"
    assert calls["litellm stream"]["attributes"]["guardrail.final_decision"] == "allow"
