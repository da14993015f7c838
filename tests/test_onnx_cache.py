"""The ONNX graph cache is verified before use: a graph that does not match its export-time SHA-256 is rebuilt."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from guardrail import Guard, TransformerScorer
from guardrail._scoring import runtime as runtime_module
from guardrail._scoring.runtime import OnnxForward, _ensure, file_sha256

HATE = "Immigrants are parasites and criminals. They should be driven out by any means necessary."
NAMES = ["input_ids", "attention_mask"]


def constant_graph(path: Path) -> bytes:
    """A tiny graph with the scorer's inputs and outputs that scores every text universalism and benevolence +0.9."""
    from onnx import TensorProto, helper

    scores = np.zeros((1, 10), dtype=np.float32)
    scores[0, 8] = scores[0, 9] = 0.9  # benevolence, universalism
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["ids", "axis"], ["total"], keepdims=1),
        helper.make_node("Mul", ["total", "zero"], ["features"]),
        helper.make_node("Add", ["features", "constant"], ["scores"]),
    ]
    inits = [
        helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("constant", TensorProto.FLOAT, [1, 10], scores.ravel().tolist()),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in NAMES]
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 10]),
               helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 1])]  # fmt: skip
    graph = helper.make_graph(nodes, "planted", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    path.write_bytes(data)
    return data


class Tiny(nn.Module):
    """Stands in for encoder + pooling + head: exports in a second."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(1, 10)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = (ids * mask).float().sum(dim=1, keepdim=True) / 100
        return torch.tanh(self.head(features)), features


def _build() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    ids = torch.tensor([[5, 7, 9, 0], [3, 4, 0, 0]])
    torch.manual_seed(0)  # the same weights at every export
    return Tiny().eval(), {"input_ids": ids, "attention_mask": (ids > 0).long()}


SAMPLE = {"input_ids": np.array([[5, 7, 9, 0]]), "attention_mask": np.array([[1, 1, 1, 0]])}


def test_export_records_the_hash_and_a_match_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    graph = _ensure("onnx", tmp_path, _build)
    assert (tmp_path / "scores.onnx.sha256").read_text().strip() == file_sha256(graph)
    monkeypatch.setattr(runtime_module, "export", lambda *a, **k: pytest.fail("exported again"))
    assert _ensure("onnx", tmp_path, _build) == graph
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.onnx", "scores.onnx.sha256"]  # no leftovers


@pytest.mark.parametrize("record", ["stale", "missing", "garbage"])
def test_a_planted_graph_is_refused_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture, record: str) -> None:
    graph = _ensure("onnx", tmp_path, _build)
    real = OnnxForward(graph, 1).run(SAMPLE)
    planted = constant_graph(graph)
    assert len(planted) < 600  # the 538-byte graph
    assert np.allclose(OnnxForward(graph, 1).run(SAMPLE)[0, 9], 0.9)  # it would change the scores
    sidecar = tmp_path / "scores.onnx.sha256"
    if record == "missing":
        sidecar.unlink()
    elif record == "garbage":
        sidecar.write_bytes(b"\xff\xfe not a hash")
    with caplog.at_level(logging.WARNING, logger="guardrail._scoring.runtime"):
        assert _ensure("onnx", tmp_path, _build) == graph
    problem = "does not match the SHA-256 recorded" if record == "stale" else "has no SHA-256 recorded"
    assert [r.getMessage() for r in caplog.records] == [
        f"the cached ONNX graph {graph} {problem} at export (corrupted or replaced): not using it, exporting it again"
    ]
    assert np.allclose(OnnxForward(graph, 1).run(SAMPLE), real, atol=1e-5)
    assert sidecar.read_text().strip() == file_sha256(graph)


def test_a_planted_int8_graph_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    int8 = _ensure("onnx-int8", tmp_path, _build)
    constant_graph(int8)
    with caplog.at_level(logging.WARNING, logger="guardrail._scoring.runtime"):
        assert _ensure("onnx-int8", tmp_path, _build) == int8
    assert "scores-int8.onnx does not match" in caplog.text
    assert (tmp_path / "scores-int8.onnx.sha256").read_text().strip() == file_sha256(int8)


def test_planted_graph_with_the_real_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GUARDRAIL_CACHE_DIR", str(tmp_path))
    first = TransformerScorer(device="cpu", runtime="onnx")
    assert first._onnx is not None
    graph = first._onnx.path
    assert Guard("default", first).check(HATE).decision == "block"
    constant_graph(graph)  # planted over the real export; its record is left as it was
    with caplog.at_level(logging.WARNING, logger="guardrail._scoring.runtime"):
        scorer = TransformerScorer(device="cpu", runtime="onnx")
    assert "does not match the SHA-256 recorded at export" in caplog.text
    verdict = Guard("default", scorer).check(HATE)
    assert verdict.decision == "block"
    assert verdict.scores is not None and verdict.scores["universalism"] < 0
    assert graph.stat().st_size > 1_000_000  # the real graph again
