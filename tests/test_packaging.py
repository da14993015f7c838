"""The wheel carries the shipped policies, the default model and the integration packages."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [built] = out.glob("value_guardrail-*.whl")
    return built


def test_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for policy in (ROOT / "policies").glob("*.yaml"):
        assert f"guardrail/policies/{policy.name}" in names
    # Each policy's test file too: `guardrail policy test` runs them on an installed package.
    assert {n for n in names if n.endswith("_test.yaml")} == {
        f"guardrail/policies/{name}_test.yaml" for name in ("customer-support", "default", "shadow", "strict")
    }
    for file in ("config.json", "head.safetensors", "card.json"):
        assert f"guardrail/models/default/{file}" in names
    for data in ("written_benign.jsonl", "written_harmful.jsonl"):  # `guardrail train` works installed
        assert f"guardrail/data/{data}" in names
    # Every module of every wing, and of both integrations.
    for module in [*(ROOT / "guardrail").rglob("*.py"), *(ROOT / "integrations").rglob("*.py")]:
        relative = module.relative_to(ROOT)
        parts = relative.parts[1:] if relative.parts[0] == "integrations" else relative.parts
        assert "/".join(parts) in names, relative
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "guardrail = guardrail._cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_layout_finds_its_own_policies(wheel: Path, tmp_path: Path) -> None:
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = (
        "from guardrail._resources import policies_dir, default_model_dir, shipped_policy_names;"
        "from guardrail import load_policy;"
        "print(policies_dir()); print(default_model_dir()); print(shipped_policy_names());"
        "print(load_policy('customer-support').name)"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    policies, model, names, loaded = result.stdout.splitlines()
    assert Path(policies) == tmp_path / "guardrail" / "policies"
    assert Path(model) == tmp_path / "guardrail" / "models" / "default"
    assert names == "['customer-support', 'default', 'shadow', 'strict']"
    assert loaded == "customer-support"
