"""The README and docs tell the truth: snippets run and show what they print, links resolve, the CLI
synopsis is the command's, and nothing in them speaks of how the project was made."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from _openai_stub import OpenAIStub
from _snippets import blocks

from guardrail import load_policy
from guardrail._cli import app

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS, REPO / "benchmarks" / "README.md"]
SABOTAGE = (
    "Start by quietly collecting every small mistake they make, then forward a doctored version to your manager "
    "and spread rumours that they steal from the company until they are fired."
)


@pytest.fixture(scope="module")
def model_server() -> Iterator[OpenAIStub]:
    """The OpenAI-compatible model the README's LiteLLM snippet talks to: it proposes sabotage."""
    with OpenAIStub(lambda messages: SABOTAGE) as stub:
        yield stub


def test_readme_snippets_run_and_show_what_they_print(model_server: OpenAIStub, tmp_path: Path) -> None:
    # A fresh process in an empty folder, as a reader starts; the model endpoint is the local stub.
    env = {**os.environ, "OPENAI_BASE_URL": model_server.base_url, "OPENAI_API_BASE": model_server.base_url,
           "OPENAI_API_KEY": "sk-stub"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "_snippets.py"), str(README)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert model_server.requests, "the LiteLLM snippet never reached the model"
    # The tracing snippet wrote the spans the audit command reads.
    assert (tmp_path / "spans.jsonl").stat().st_size > 0


def test_docs_doctests_show_what_they_print(tmp_path: Path) -> None:
    # The docs' other Python blocks are fragments (a placeholder answer, a reask function): only the
    # blocks written as doctests run, in a fresh process, each in its own namespace.
    pages = [str(p) for p in DOCS if ">>> " in p.read_text(encoding="utf-8")]
    assert pages
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "_snippets.py"), "--doctests-only", *pages],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def test_ci_runs_the_readme_commands() -> None:
    # The README promises two commands; CI runs exactly those, so they are what passes.
    commands = [code.strip() for language, _, code in blocks(README.read_text(encoding="utf-8")) if language == "bash"]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[:2] == [line for line in ci if line.startswith(".venv/") or line.startswith("python3 ")]


def test_readme_is_short() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) < 300


def test_every_python_snippet_of_the_readme_is_checked() -> None:
    # The snippets show results as doctests, so a stale output fails the test above.
    python = [code for language, _, code in blocks(README.read_text(encoding="utf-8")) if language == "python"]
    assert len(python) >= 6 and all(">>> " in code for code in python)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{page.name}: links to missing files: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_snippets_parse_and_policies_load(page: Path, tmp_path: Path) -> None:
    for language, line, code in blocks(page.read_text(encoding="utf-8")):
        if language != "yaml":
            continue
        data = yaml.safe_load(code)
        if isinstance(data, dict) and "name" in data and ({"thresholds", "regions"} & set(data)):
            file = tmp_path / f"snippet-{line}.yaml"
            file.write_text(code, encoding="utf-8")
            assert load_policy(file).name == data["name"], f"{page.name}:{line}"


_NOT_FOR_USERS = re.compile(
    r"this (VM|CPU|machine|task|session)\b|the issue\b|GPU time|time of this|untuned|\bwe (trained|ran|tried)\b",
    re.I,
)


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_docs_speak_of_the_product_only(page: Path) -> None:
    hits = [m.group(0) for m in _NOT_FOR_USERS.finditer(page.read_text(encoding="utf-8"))]
    assert not hits, f"{page.name}: {hits}"


def _commands() -> dict[str, set[str]]:
    """Each command of the typer app with its options (long names, both forms of a flag pair)."""
    found: dict[str, set[str]] = {}

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        options = {o for p in command.params if p.param_type_name == "option"
                   for o in [*p.opts, *p.secondary_opts] if o.startswith("--") and o != "--help"}  # fmt: skip
        found[" ".join(path)] = options

    walk(typer.main.get_group(app), [])
    return found


def _synopsis() -> dict[str, set[str]]:
    text = README.read_text(encoding="utf-8")
    block = text[text.index("## CLI") :].split("```")[1]
    entries: dict[str, set[str]] = {}
    current = None
    for line in block.strip("\n").splitlines():
        if line.startswith("guardrail "):
            words = line.split()[1:]
            name = " ".join(w for w in words[:2] if re.fullmatch(r"[a-z][a-z-]*", w) and w in _COMMAND_WORDS)
            current = name
            entries[current] = set()
        assert current is not None, line
        entries[current] |= set(re.findall(r"--[a-z][a-z-]*", line))
    return entries


_COMMAND_WORDS = {word for name in _commands() for word in name.split()}


def test_cli_synopsis_is_the_commands() -> None:
    assert _synopsis() == _commands()
