"""The scoring service under load: throughput and latency of concurrent checks, as JSON.

    python benchmarks/bench_serving.py [--checks 2000] [--runtime torch] [--data ../shared/data] [--out FILE]

Starts ``guardrail serve`` (uvicorn, one process) on 127.0.0.1, then sends ``--checks`` concurrent
checks of real LLM answers (10-45 tokens, the harm sources') three ways: ``Guard`` with a
``RemoteScorer`` (one HTTP request per check; the service micro-batches them), the Generic
Guardrail route (what a LiteLLM proxy sends), and for reference the same checks in-process on one
``Guard`` (``check_many``, one batch). Client and service share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_check import publish


def percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {f"p{int(q * 100)}_ms": round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)
            for q in (0.5, 0.9, 0.99)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--runtime", default="torch")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import yaml

    from guardrail import Guard, RemoteScorer, TransformerScorer

    rows = [json.loads(line) for f in sorted((args.data / "harm").glob("*.jsonl")) for line in f.open()]
    rows = [r for r in rows if 40 < len(r["response"]) < 200]
    answers = [(r["prompt"] if n % 2 else None, r["response"]) for n, r in
               enumerate(random.Random(17).sample(rows, args.checks))]  # fmt: skip
    policy = yaml.safe_load((Path(__file__).resolve().parents[1] / "policies" / "default.yaml").read_text())
    policy["timeout_ms"] = 600_000  # measure the queue, do not cut it
    policy_file = Path("/tmp") / f"bench-serving-{os.getpid()}.yaml"
    policy_file.write_text(yaml.safe_dump(policy))

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "guardrail", "serve", "--port", str(port), "--runtime",
                               args.runtime, "--policy", str(policy_file), "--timeout-ms", "600000"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while True:
            try:
                if httpx.get(f"{url}/readyz", trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        figures: dict[str, dict[str, float]] = {}

        def timed(label: str, run) -> None:
            times: list[float] = []
            started = time.perf_counter()
            asyncio.run(run(times))
            elapsed = time.perf_counter() - started
            figures[label] = {"checks_per_s": round(args.checks / elapsed, 1), **percentiles(times)}

        remote = Guard(policy_file, RemoteScorer(url, timeout_ms=600_000))

        async def via_remote(times: list[float]) -> None:
            async def one(prompt: str | None, response: str) -> None:
                start = time.perf_counter()
                verdict = await remote.acheck(response, prompt)
                times.append(time.perf_counter() - start)
                assert verdict.error is None, verdict.error

            await asyncio.gather(*(one(p, r) for p, r in answers))

        async def via_route(times: list[float]) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=200),
                                         trust_env=False) as client:  # fmt: skip

                async def one(text: str) -> None:
                    start = time.perf_counter()
                    body = {"input_type": "response", "texts": [text], "request_data": {}}
                    (await client.post("/beta/litellm_basic_guardrail_api", json=body)).raise_for_status()
                    times.append(time.perf_counter() - start)

                await asyncio.gather(*(one(r) for _, r in answers))

        timed("remote_scorer", via_remote)
        timed("generic_guardrail_route", via_route)
    finally:
        server.terminate()
        server.wait(30)

    local = Guard(policy_file, TransformerScorer(runtime=args.runtime))
    local.check_many([r for _, r in answers[:64]])
    started = time.perf_counter()
    local.check_many([r for _, r in answers], [p for p, _ in answers])
    figures["in_process_check_many"] = {"checks_per_s": round(args.checks / (time.perf_counter() - started), 1)}
    policy_file.unlink(missing_ok=True)
    report = {
        "benchmark": "scoring service: concurrent checks over HTTP vs in-process",
        "checks": args.checks,
        "answers": "harm sources' answers of 40-200 characters (10-45 tokens), half with prompts",
        "runtime": args.runtime,
        "figures": figures,
    }
    publish(report, args.out)


if __name__ == "__main__":
    main()
