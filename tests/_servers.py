"""Real servers for tests: free ports, the LiteLLM proxy and ``guardrail serve`` as subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Proxy:
    url: str
    log: Path

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_proxy(config: Path, log: Path, attempts: int = 2) -> tuple[subprocess.Popen[bytes], Proxy]:
    """Start the proxy and wait until it is live; a start that dies early (a port race) is retried once."""
    env = {**os.environ, "LITELLM_MASTER_KEY": "sk-test", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_PROXY": "127.0.0.1,localhost"}  # fmt: skip
    for attempt in range(1, attempts + 1):
        port = free_port()
        command = [sys.executable, "-c", "import sys; from litellm import run_server; sys.exit(run_server())",
                   "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        with log.open("ab") as out:
            out.write(f"--- attempt {attempt}, port {port}\n".encode())
            out.flush()
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=config.parent)
        server = Proxy(f"http://127.0.0.1:{port}", log)
        # The proxy imports a lot and loads the model: ~10-20 s here.
        if wait_until_up(process, f"{server.url}/health/liveliness", 180):
            return process, server
        timed_out = process.poll() is None  # else it exited early (a port race): try again
        stop(process)
        if timed_out:
            pytest.fail(f"the proxy was not ready after 180 s:\n{server.tail()}", pytrace=False)
    pytest.fail(f"the proxy exited with {process.returncode}:\n{server.tail()}", pytrace=False)


def wait_until_up(process: subprocess.Popen[bytes] | None, url: str, seconds: float) -> bool:
    """Whether ``url`` answers 200 within ``seconds`` (False as soon as ``process`` exits)."""
    deadline = time.monotonic() + seconds
    while (process is None or process.poll() is None) and time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    return False


def same_vectors(got: list[Any], want: list[Any]) -> bool:
    """Each verdict carries its own answer's vector: equal but for float rounding (batches differ in padding)."""

    def close(g: Any, w: Any) -> bool:
        if g.scores is None or w.scores is None:  # nothing scored (all of it in another language)
            return g.scores is w.scores
        return max(abs(a - b) for a, b in zip(g.scores, w.scores)) < 1e-4

    return len(got) == len(want) and all(close(g, w) for g, w in zip(got, want))


def patient_policy(folder: Path) -> Path:
    """The default policy with a deadline that 2,000 queued checks on two cores stay within."""
    policy = yaml.safe_load((REPO / "policies" / "default.yaml").read_text(encoding="utf-8"))
    policy["timeout_ms"] = 300_000
    (folder / "default.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    return folder / "default.yaml"


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


def start_service(args: list[str], log: Path, *, env: dict[str, str] | None = None,
                  wait_s: float = 180) -> tuple[subprocess.Popen[bytes], str]:  # fmt: skip
    """``guardrail serve ARGS`` on a free port, once ``/readyz`` says ready; its process and URL."""
    port = free_port()
    command = [sys.executable, "-m", "guardrail", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_PROXY": "127.0.0.1,localhost",
            **(env or {})}  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=full)
    url = f"http://127.0.0.1:{port}"
    if wait_until_up(process, f"{url}/readyz", wait_s):
        return process, url
    stop(process)
    tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
    pytest.fail(f"guardrail serve was not ready (exit {process.returncode}):\n{tail}", pytrace=False)
