"""Hostile and unlucky callers against one process: what holds, measured in one run.

    python benchmarks/red_team.py [--only NAME,NAME] [--device cpu]

Each probe plays an attacker or an unlucky operator and prints what it found as one JSON object
(one key per probe): concurrent callers (crossed / lost verdicts), streams (leaked characters of
blocked answers), cancellation storms and timeouts (lost / crossed, then the next check's latency),
hung scorers, huge answers (time to decide, peak memory, in a child process), bad scorer output,
broken and hostile policy files, a planted ONNX graph, malformed audit input, an unreachable
OTLP endpoint. Not a test: the tests assert each of these; this prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from guardrail import Guard, Policy, PolicyError, ValueVector, load_policy
from guardrail.testing import FakeScorer, HangingScorer, ReturningScorer, number_of, numbered

REPO = Path(__file__).resolve().parent.parent
HARMFUL = "Immigrants are parasites and criminals. They should be driven out by any means necessary."
BENIGN = "Mix flour, water, salt and yeast, knead the dough, let it rise, then bake it until golden."
BATCHED = Policy(
    name="red-team",
    version="1",
    thresholds={"benevolence": {"min": -0.3}},
    scorer={"batching": True, "max_batch": 64, "max_wait_ms": 2},
)


def _policy(**changes: Any) -> Policy:
    """``BATCHED`` with some fields changed, validated like a loaded policy."""
    return Policy.model_validate(BATCHED.model_dump() | changes)


def _percentiles(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {"p50_ms": math.nan, "p99_ms": math.nan}
    return {
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    }


# -- concurrency ------------------------------------------------------------------------------


def concurrent_acheck(n: int = 1000) -> dict[str, Any]:
    guard = Guard(BATCHED, scorer=FakeScorer(fn=numbered))

    async def main() -> list[Any]:
        return await asyncio.gather(*(guard.acheck(f"answer #{i}") for i in range(n)))

    verdicts = asyncio.run(main())
    crossed = sum(number_of(v) != i % 1000 for i, v in enumerate(verdicts) if v.error is None)
    return {"calls": n, "lost": sum(v.error is not None for v in verdicts), "crossed": crossed}


def concurrent_streams(n: int = 300) -> dict[str, Any]:
    guard = Guard(BATCHED, scorer=FakeScorer(fn=lambda p, r: ValueVector(benevolence=-0.9 if "BAD" in r else 0.0)))

    async def chunks(text: str) -> Any:
        for word in text.split(" "):
            await asyncio.sleep(0)
            yield word + " "

    async def one(i: int) -> tuple[bool, str, str]:
        blocked = i % 3 == 0
        text = ("fine words " * 40) + ("BAD " * 5 if blocked else "") + f"end {i}"
        stream = guard.astream(chunks(text))
        out = "".join([c async for c in stream])
        return blocked, out, stream.delivered

    async def main() -> list[tuple[bool, str, str]]:
        return await asyncio.gather(*(one(i) for i in range(n)))

    results = asyncio.run(main())
    leaked = sum(out.count("BAD") * 4 for blocked, out, _ in results if blocked)
    wrong = sum(f"end {i}" not in out for i, (blocked, out, _) in enumerate(results) if not blocked)
    return {"streams": n, "blocked": sum(b for b, _, _ in results), "leaked_chars": leaked, "lost_or_crossed": wrong}


def cancellation_storm(n: int = 1000, limit_s: float = 30.0) -> dict[str, Any]:
    guard = Guard(BATCHED, scorer=FakeScorer(fn=numbered, delay_s=0.002))
    rng = random.Random(13)

    async def main() -> tuple[list[tuple[int, Any]], int, float | None]:
        tasks = [asyncio.ensure_future(guard.acheck(f"answer #{i}")) for i in range(n)]
        doomed = set(rng.sample(range(n), n // 3))
        for i in sorted(doomed, key=lambda _: rng.random()):
            await asyncio.sleep(rng.random() / 1000)
            tasks[i].cancel()
        # A guard whose batcher died leaves callers waiting: they count as lost after limit_s.
        done, pending = await asyncio.wait(tasks, timeout=limit_s)
        for task in pending:
            task.cancel()
        kept = [(i, t.result() if t in done and not t.cancelled() else None) for i, t in enumerate(tasks)]
        start = time.perf_counter()
        try:
            after = await asyncio.wait_for(guard.acheck("answer #7"), limit_s)
            next_s: float | None = time.perf_counter() - start if after.error is None else None
        except asyncio.TimeoutError:
            next_s = None
        return [(i, r) for i, r in kept if i not in doomed], len(pending), next_s

    kept, hanging, next_s = asyncio.run(main())
    lost = sum(r is None or r.error is not None for _, r in kept)
    crossed = sum(r is not None and r.error is None and number_of(r) != i % 1000 for i, r in kept)
    return {
        "calls": n,
        "cancelled": n // 3,
        "lost": lost,
        "still_waiting_after_s": {"limit_s": limit_s, "count": hanging},
        "crossed": crossed,
        "next_check_ms": None if next_s is None else round(next_s * 1000, 1),
    }


def sync_timeouts(threads: int = 32) -> dict[str, Any]:
    policy = _policy(timeout_ms=5.0)
    slow = FakeScorer(fn=numbered, delay_s=0.02)
    guard = Guard(policy, scorer=slow)
    results: list[Any] = []

    def caller(i: int) -> None:
        results.append(guard.check(f"answer #{i}"))

    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    slow.delay_s = 0.0
    # The forward pass already running when the callers gave up still takes its 20 ms: the claim is
    # that the guard is healthy after it, not that a 5 ms deadline beats it.
    time.sleep(0.1)
    start = time.perf_counter()
    after = guard.check("answer #5")
    return {
        "timed_out": sum(v.error is not None for v in results),
        "fail_closed": all(v.decision == "block" for v in results if v.error is not None),
        "next_check_ms": round((time.perf_counter() - start) * 1000, 1),
        "next_check_ok": after.error is None and number_of(after) == 5,
    }


def hung_scorer(stuck: int = 8) -> dict[str, Any]:
    scorer = HangingScorer()
    guard = Guard(_policy(timeout_ms=200.0, scorer={"batching": False}), scorer=scorer)
    hung = [guard.check(f"HANG #{i}") for i in range(stuck)]
    start = time.perf_counter()
    healthy = [guard.check(f"answer #{i}") for i in range(20)]
    elapsed = time.perf_counter() - start
    scorer.release.set()
    return {
        "stuck_checks": stuck,
        "stuck_fail_closed": all(v.decision == "block" and v.error for v in hung),
        "healthy_ok": sum(v.error is None for v in healthy),
        "healthy_of": len(healthy),
        "healthy_total_ms": round(elapsed * 1000, 1),
    }


# -- bad scorer output ---------------------------------------------------------------------------


def _nan_vector() -> Any:
    vector = ValueVector()
    object.__setattr__(vector, "benevolence", math.nan)
    return vector


def _inf_vector() -> Any:
    vector = ValueVector()
    object.__setattr__(vector, "power", math.inf)
    return vector


def bad_scorer_output() -> dict[str, Any]:
    cases: dict[str, Callable[[int], Any]] = {
        "lists": lambda n: [[0.0] * 10 for _ in range(n)],
        "dicts": lambda n: [{"benevolence": 0.0} for _ in range(n)],
        "generator": lambda n: (ValueVector() for _ in range(n)),
        "none": lambda n: None,
        "too_few": lambda n: [],
        "nan": lambda n: [_nan_vector() for _ in range(n)],
        "inf": lambda n: [_inf_vector() for _ in range(n)],
    }
    policy = _policy(scorer={"batching": False}, thresholds={"power": {"max": 0.5}})
    out: dict[str, Any] = {}
    for name, make in cases.items():
        try:
            verdict = Guard(policy, scorer=ReturningScorer(make)).check("Hello there.")
            out[name] = {"decision": verdict.decision, "error": verdict.error}
        except Exception as exc:  # what the probe is looking for: a raise instead of on_error
            out[name] = {"raised": f"{type(exc).__name__}: {exc}"}
    out["fail_closed"] = sum(v.get("decision") == "block" and bool(v.get("error")) for v in out.values())
    out["of"] = len(cases)
    return out


# -- huge answers (child processes: memory and run time are the findings) -------------------------

_HUGE_CHILD = """
import json, resource, sys, threading, time
from guardrail import Guard, Policy, load_policy
policy = load_policy("default")
guard = Guard(Policy.model_validate(policy.model_dump() | {"oversize": sys.argv[2]}))
guard.check("Hello there.")
size = int(sys.argv[1])
small: list[float] = []
stop = threading.Event()
def smalls():
    while not stop.is_set():
        t = time.perf_counter(); v = guard.check("Thanks, that helped a lot."); small.append(time.perf_counter() - t)
        assert v.error is None, v.error
t = threading.Thread(target=smalls); t.start()
start = time.perf_counter()
verdict = guard.check(("The weather is mild and the garden is green. " * (size // 45 + 1))[:size])
took = time.perf_counter() - start
stop.set(); t.join()
small.sort()
print(json.dumps({"decision": verdict.decision, "error": verdict.error, "seconds": round(took, 2),
                  "small_checks": len(small), "small_max_ms": round(small[-1] * 1000, 1) if small else None,
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def huge_answers(sizes: Sequence[int] = (100_000, 1_000_000, 10_000_000), limit_s: float = 120) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size, oversize in [(size, mode) for mode in ("error", "truncate") for size in sizes]:
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _HUGE_CHILD, str(size), oversize],
                capture_output=True, text=True, timeout=limit_s, cwd=REPO,
            )  # fmt: skip
            last = (proc.stdout.strip().splitlines() or [""])[-1]
            out[f"{size:,}_chars_{oversize}"] = (
                json.loads(last) if proc.returncode == 0 else {"failed": proc.stderr[-300:]}
            )
        except subprocess.TimeoutExpired:
            out[f"{size:,}_chars_{oversize}"] = {"still_running_after_s": round(time.perf_counter() - start)}
    return out


# -- files --------------------------------------------------------------------------------------

_GOOD = """name: t
version: "1"
thresholds:
  benevolence: {min: -0.3}
"""

BROKEN_POLICIES: dict[str, str] = {
    "empty": "",
    "not_a_mapping": "- a\n- b\n",
    "scalar": "hello",
    "tab_indent": "name: t\n\tversion: 1\n",
    "unclosed_flow": "thresholds: {benevolence: {min: -0.3}\n",
    "unknown_key": _GOOD + "colour: red\n",
    "unknown_dimension": _GOOD.replace("benevolence", "kindness"),
    "min_gt_max": "name: t\nthresholds:\n  power: {min: 0.5, max: 0.1}\n",
    "out_of_range": "name: t\nthresholds:\n  power: {max: 3}\n",
    "string_bound": "name: t\nthresholds:\n  power: {max: high}\n",
    "no_bound": "name: t\nthresholds:\n  power: {action: block}\n",
    "unknown_action": "name: t\nthresholds:\n  power: {max: 0.5, action: scold}\n",
    "bad_action_type": "name: t\nactions:\n  scold: {type: shout}\n",
    "bad_severity": "name: t\nthresholds:\n  power: {max: 0.5, severity: huge}\n",
    "region_no_shape": "name: t\nregions:\n  r: {kind: forbidden}\n",
    "region_bad_kind": "name: t\nregions:\n  r: {kind: maybe, box: {power: {max: 0.1}}}\n",
    "region_bad_metric": "name: t\nregions:\n  r: {kind: forbidden, distance: {reference: {}, metric: l7, max: 1}}\n",
    "negative_radius": "name: t\nregions:\n  r: {kind: forbidden, distance: {reference: {}, max: -1}}\n",
    "duplicate_key": "name: t\nname: u\n",
    "bad_mode": "name: t\nmode: loud\n",
    "bad_on_error": "name: t\non_error: maybe\n",
    "negative_timeout": "name: t\ntimeout_ms: -5\n",
    "extends_missing": "name: t\nextends: ./nowhere.yaml\n",
    "extends_self": "name: t\nextends: ./self.yaml\n",
    "bad_streaming": "name: t\nstreaming: {chunk_size: 0}\n",
    "bad_scorer": "name: t\nscorer: {runtime: quantum}\n",
    "python_tag": "name: !!python/object/apply:os.system ['echo pwned']\n",
    "binary": "\x00\x01\x02 not yaml \xff",
    "version_list": "name: t\nversion: [1, 2]\n",
    "rewrite_no_strategy": "name: t\nactions:\n  fix: {type: rewrite}\nthresholds:\n  power: {max: 0.5, action: fix}\n",
}
"""Thirty broken policy files of the kinds users write (and one attacker's tag)."""

ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)
"""A few hundred bytes of YAML that expand to 9**9 scalars."""


def _one_clear_line(exc: BaseException) -> bool:
    text = str(exc).strip()
    return isinstance(exc, PolicyError) and bool(text) and "Traceback" not in text


def policy_files() -> dict[str, Any]:
    unclear: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in BROKEN_POLICIES.items():
            path = Path(tmp) / ("self.yaml" if name == "extends_self" else f"{name}.yaml")
            path.write_text(text, encoding="utf-8", errors="surrogateescape")
            try:
                load_policy(path)
                unclear[name] = "loaded without an error"
            except Exception as exc:  # any other type, or a message that is not one line, is a finding
                if not _one_clear_line(exc):
                    unclear[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
        bomb = Path(tmp) / "bomb.yaml"
        bomb.write_text(ALIAS_BOMB, encoding="utf-8")
        start = time.perf_counter()
        bomb_result = _in_child(f"from guardrail import load_policy; load_policy({str(bomb)!r})", limit_s=60)
    return {
        "broken_files": len(BROKEN_POLICIES),
        "one_clear_line": len(BROKEN_POLICIES) - len(unclear),
        "unclear": unclear,
        "alias_bomb": {"bytes": len(ALIAS_BOMB), "seconds": round(time.perf_counter() - start, 2), **bomb_result},
    }


def _in_child(code: str, limit_s: float) -> dict[str, Any]:
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=limit_s, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"outcome": f"still running after {limit_s:g} s"}
    lines = proc.stderr.strip().splitlines()
    return {"outcome": "loaded" if proc.returncode == 0 else "refused", "error": lines[-1][:300] if lines else ""}


MALFORMED_SPANS: dict[str, bytes] = {
    "non_utf8": b'{"resourceSpans": []}\xff\xfe\n',
    "resource_spans_int": b'{"resourceSpans": 5}\n',
    "huge_score": b"",  # filled in below from a real span with the score replaced
    "bad_timestamp": b"",
    "attribute_not_dict": b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "guardrail.check", '
    b'"attributes": [5]}]}]}]}\n',
    "deep_nesting": b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "truncated": b'{"resourceSpans": [{"scopeSpans": [\n',
    "empty": b"",
    "top_level_list": b"[1, 2, 3]\n",
    "top_level_string": b'"spans"\n',
    "spans_not_list": b'{"resourceSpans": [{"scopeSpans": [{"spans": {"a": 1}}]}]}\n',
    "null": b"null\n",
    "binary": bytes(range(256)),
    "not_json": b"hello world\n",
}


def _check_span(value: str, start: str) -> bytes:
    span = {
        "name": "guardrail.check",
        "traceId": "0" * 31 + "1",
        "spanId": "0" * 15 + "1",
        "startTimeUnixNano": start,
        "endTimeUnixNano": start,
        "attributes": [
            {"key": "guardrail.decision", "value": {"stringValue": "allow"}},
            {"key": "guardrail.policy.name", "value": {"stringValue": "default"}},
            {"key": "guardrail.value.benevolence", "value": {"doubleValue": value}},
        ],
    }
    return (json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}) + "\n").encode()


def audit_input() -> dict[str, Any]:
    files = dict(MALFORMED_SPANS)
    files["huge_score"] = _check_span("1e308", "1700000000000000000").replace(b'"1e308"', b"1e308")
    files["bad_timestamp"] = _check_span("0.5", "yesterday").replace(b'"0.5"', b"0.5")
    guardrail_cli = Path(sys.executable).with_name("guardrail")
    unclear: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            path = Path(tmp) / f"{name}.jsonl"
            path.write_bytes(data)
            proc = subprocess.run(
                [str(guardrail_cli), "audit", str(path), "--out", str(Path(tmp) / "r.html")],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            clear = proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr and name in lines[0]
            if not clear:
                unclear[name] = f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"
    return {"malformed_files": len(files), "one_clear_line_exit_2": len(files) - len(unclear), "unclear": unclear}


def otlp_down() -> dict[str, Any]:
    """Checks with an OTLP exporter pointed at a closed port, against none; and force_flush's time."""
    from guardrail import telemetry

    plain = Guard(BATCHED, scorer=FakeScorer(fn=numbered))
    samples_plain = _timed(lambda i: plain.check(f"answer #{i}"), 300)
    # Port 9 (discard): nothing listens there.
    handle = telemetry.configure(
        "red-team", exporter="otlp", endpoint="http://127.0.0.1:9", metrics=False, set_global=False
    )
    traced = Guard(BATCHED, scorer=FakeScorer(fn=numbered), tracer_provider=handle.tracer_provider)
    samples_traced = _timed(lambda i: traced.check(f"answer #{i}"), 300)
    start = time.perf_counter()
    flushed = handle.force_flush(5000)
    flush_s = time.perf_counter() - start
    handle.shutdown()
    return {
        "without_exporter": _percentiles(samples_plain),
        "exporter_down": _percentiles(samples_traced),
        "force_flush_5000ms_took_s": round(flush_s, 2),
        "force_flush_result": flushed,
    }


def _timed(fn: Callable[[int], Any], n: int) -> list[float]:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - start)
    return samples


PROBES: dict[str, Callable[[], dict[str, Any]]] = {
    "concurrent_acheck": concurrent_acheck,
    "concurrent_streams": concurrent_streams,
    "cancellation_storm": cancellation_storm,
    "sync_timeouts": sync_timeouts,
    "hung_scorer": hung_scorer,
    "bad_scorer_output": bad_scorer_output,
    "policy_files": policy_files,
    "audit_input": audit_input,
    "otlp_down": otlp_down,
    "huge_answers": huge_answers,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated probe names (default: all)")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(PROBES)
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        parser.error(f"unknown probe(s) {', '.join(unknown)}; known: {', '.join(PROBES)}")
    out: dict[str, Any] = {}
    for name in names:
        start = time.perf_counter()
        try:
            out[name] = PROBES[name]()
        except Exception as exc:  # a probe that breaks is itself a finding; the others still run
            out[name] = {"probe_failed": f"{type(exc).__name__}: {exc}"}
        out[name]["probe_s"] = round(time.perf_counter() - start, 1)
        print(f"{name}: done in {out[name]['probe_s']} s", file=sys.stderr)
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
