"""The house's walls: each subsystem is one subpackage, and imports point one way.

Arrows: integrations -> ``guardrail`` (public API and ``guardrail.telemetry``); top (CLI, public
modules) -> anything; training, audit (which re-decides recorded traffic) and the policy lifecycle
on top; guard -> policy, scoring, telemetry; scoring ->
telemetry; policy and telemetry -> kernel. Every import counts: module level, inside functions and
under ``TYPE_CHECKING`` alike, so a type-only arrow cannot hide a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "guardrail"
INTEGRATIONS = ROOT / "integrations"

KERNEL = "kernel"
TOP = "top"
# The wings each wing may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    KERNEL: set(),
    "_policy": {KERNEL},
    "_telemetry": {KERNEL},
    "_scoring": {KERNEL, "_telemetry"},
    "_guard": {KERNEL, "_policy", "_scoring", "_telemetry"},
    "_training": {KERNEL, "_policy", "_scoring"},
    "_audit": {KERNEL, "_policy", "_telemetry"},
    "_lifecycle": {KERNEL, "_policy", "_scoring", "_telemetry", "_guard", "_audit"},
    "_serving": {KERNEL, "_policy", "_scoring", "_telemetry", "_guard"},
    TOP: {KERNEL, "_policy", "_scoring", "_telemetry", "_guard", "_training", "_audit", "_serving", "_lifecycle"},
}
TOP_MODULES = {"guardrail", "guardrail.__main__", "guardrail._cli", "guardrail._demo", "guardrail.telemetry",
               "guardrail.testing", "guardrail.serving"}  # fmt: skip
# Arrows allowed for annotations only, each under ``if TYPE_CHECKING:`` and never imported at run time.
TYPE_ONLY = {("guardrail._verdict", "guardrail._policy.schema")}  # a verdict names the policy action it applied
PUBLIC = {"guardrail", "guardrail.telemetry", "guardrail.testing", "guardrail.serving"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "integrations":
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_only_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            lines |= {n.lineno for stmt in node.body for n in ast.walk(stmt) if hasattr(n, "lineno")}
    return lines


def _imports(path: Path, *, runtime: bool = False) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports (absolute names), with the line; ``runtime``: leave out type-only ones."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_only_lines(tree) if runtime else set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            # ``from guardrail._policy import schema`` imports the submodule.
            for alias in node.names:
                if (PACKAGE.parent / Path(*f"{base}.{alias.name}".split("."))).with_suffix(".py").exists():
                    yield node.lineno, f"{base}.{alias.name}"


def _wing(module: str) -> str:
    if module in TOP_MODULES:
        return TOP
    parts = module.split(".")
    if len(parts) >= 3 or (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return KERNEL


def _core_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_in_a_known_wing() -> None:
    wings = {_wing(_module_name(p)) for p in _core_modules()}
    assert wings <= set(ALLOWED), wings - set(ALLOWED)
    # One subpackage per subsystem, and no loose module other than the kernel and the top.
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(ALLOWED) - {
        KERNEL, TOP
    }  # fmt: skip


@pytest.mark.parametrize("path", _core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: Path) -> None:
    module = _module_name(path)
    wing = _wing(module)
    wrong = []
    runtime = set(_imports(path, runtime=True))
    for line, target in _imports(path):
        if (module, target) in TYPE_ONLY:
            if (line, target) in runtime:
                wrong.append(f"{path.name}:{line} imports {target} at run time; it is allowed for annotations only")
        elif target.startswith(("guardrail_litellm", "guardrail_langchain")):
            wrong.append(f"{path.name}:{line} imports the integration {target}")
        elif target == "guardrail" and wing != TOP:
            wrong.append(f"{path.name}:{line} ({wing}) imports the package itself, which imports everything")
        elif target.startswith("guardrail.") and _wing(target) != wing and _wing(target) not in ALLOWED[wing]:
            wrong.append(f"{path.name}:{line} ({wing}) imports {target} ({_wing(target)})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", sorted(INTEGRATIONS.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_integrations_use_only_the_public_api(path: Path) -> None:
    private = [f"{path.name}:{line} imports {t}" for line, t in _imports(path)
               if (t == "guardrail" or t.startswith("guardrail.")) and t not in PUBLIC]  # fmt: skip
    assert not private, "\n".join(private)


def test_no_import_circle_inside_the_package() -> None:
    graph = {
        _module_name(p): {t for _, t in _imports(p) if t.startswith("guardrail.") and t != _module_name(p)}
        for p in _core_modules()
    }
    graph = {m: {t for t in targets if t in graph} for m, targets in graph.items()}
    # The package itself re-exports everything: ``guardrail`` is the top, never a dependency.
    circles = []
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(circles)


def test_the_checks_see_the_known_arrows() -> None:
    # The walker must see imports inside functions and under TYPE_CHECKING, and resolve relative ones.
    seen = dict(_imports(PACKAGE / "_cli.py")).values()
    assert "guardrail._training.train" in seen
