"""What two end-to-end tests need beyond the package's own extras, found or built on first use (not collected).

- The Phoenix server (``tests/test_phoenix.py``) runs from a virtual environment of its own, since
  its pins clash with ``litellm[proxy]``. It is built once, with pip from the package index, into
  the user cache (``$XDG_CACHE_HOME/value-guardrail/phoenix-<version>``, about 2 minutes and 850 MB)
  and reused afterwards; ``GUARDRAIL_PHOENIX_BIN`` names an existing ``phoenix`` executable instead.
- A Chromium for the audit report's browser test: ``GUARDRAIL_CHROMIUM``, else one on ``PATH``,
  else Debian's package, installed with apt-get when the tests run as root (as in CI). Anything
  else fails the test with the command that provides it: a required test never skips.

Builds are serialised with a lock file, so two test runs never build the same thing at once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PHOENIX_VERSION = "20.26.*"
PHOENIX_BIN_ENV = "GUARDRAIL_PHOENIX_BIN"
CHROMIUM_ENV = "GUARDRAIL_CHROMIUM"
_BUILD_TIMEOUT_S = 1800
_PLAYWRIGHT_CHROME = ".cache/ms-playwright/chromium-*/chrome-linux*/chrome"
_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def cache_dir() -> Path:
    """The user cache folder of these builds (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "value-guardrail"


@contextmanager
def _locked(name: str) -> Iterator[None]:
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, env=env)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"{what} failed ({' '.join(command)}):\n{exc.stderr[-3000:]}", pytrace=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} did not finish within {_BUILD_TIMEOUT_S} s ({' '.join(command)})", pytrace=False)


def phoenix_bin() -> Path:
    """The ``phoenix`` executable: ``$GUARDRAIL_PHOENIX_BIN``, else the cached venv, built when missing."""
    if named := os.environ.get(PHOENIX_BIN_ENV):
        if not Path(named).is_file():
            pytest.fail(f"{PHOENIX_BIN_ENV}={named}: no such file", pytrace=False)
        return Path(named)
    venv = cache_dir() / f"phoenix-{PHOENIX_VERSION.rstrip('.*')}"
    executable, complete = venv / "bin" / "phoenix", venv / ".complete"
    with _locked("phoenix"):
        if not complete.is_file():
            # The marker is written last, so an interrupted build is never taken for a whole one.
            shutil.rmtree(venv, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(venv)], "creating the Phoenix venv")
            _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  f"arize-phoenix=={PHOENIX_VERSION}"], "installing arize-phoenix")  # fmt: skip
            complete.write_text(f"arize-phoenix=={PHOENIX_VERSION}\n")
    if not executable.is_file():
        pytest.fail(f"the Phoenix venv at {venv} has no bin/phoenix; remove the folder to rebuild it", pytrace=False)
    return executable


def chromium_path() -> str:
    """A Chromium binary: ``$GUARDRAIL_CHROMIUM``, one on ``PATH``, else Debian's, installed when root."""
    if named := os.environ.get(CHROMIUM_ENV):
        if not Path(named).is_file():
            pytest.fail(f"{CHROMIUM_ENV}={named}: no such file", pytrace=False)
        return named
    found = next((p for name in _CHROMIUM_NAMES if (p := shutil.which(name))), None)
    # `playwright install chromium` puts its own build in the user cache.
    found = found or next((str(p) for p in sorted(Path.home().glob(_PLAYWRIGHT_CHROME), reverse=True)), None)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        with _locked("chromium"):
            if not shutil.which("chromium"):
                env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
                _run(["apt-get", "update", "-qq"], "updating the package lists", env)
                _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
                     "installing chromium", env)  # fmt: skip
        if found := shutil.which("chromium"):
            return found
    pytest.fail(
        "no Chromium found: install one (Debian/Ubuntu: sudo apt-get install chromium; elsewhere your package "
        f"manager's chromium, or `playwright install chromium`) or set {CHROMIUM_ENV} to its binary",
        pytrace=False,
    )
