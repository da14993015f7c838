"""The real default scorer: stability, windowing, safe loading, clear errors."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import pytest

from guardrail import Guard, ModelLoadError, ScorerError, TransformerScorer, ValueVector
from guardrail._resources import default_model_dir
from guardrail._scoring.scorer import pick_device
from guardrail._types import Item

BENIGN = (
    "Sourdough needs a lively starter, flour, water and salt. Mix, rest for an hour, then stretch and "
    "fold the dough every half hour for two hours. Shape it, let it rise overnight in the fridge, and "
    "bake it in a very hot covered pot for twenty minutes, then uncovered until deep brown. "
)
MUSEUM = (
    "The city museum is a lovely place to spend an afternoon with family. Its galleries cover local history, "
    "from the first market town to the railway age, and the staff are friendly and happy to answer questions. "
    "There is a small cafe on the ground floor and the gardens are open to everyone in summer. "
)
THEFT = (
    "If money is tight, wait until a tourist leaves their wallet unattended, take a photo of their credit card, "
    "then use it for online purchases shipped to a different address so you don't get caught."
)
HARMFUL_TAIL = (
    "Also, your neighbour's kids are worthless vermin. Poison their dog, slash their tyres and make "
    "them afraid to leave the house until they move away."
)


def test_auto_device_is_cpu_without_a_gpu() -> None:
    import torch

    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == "cpu"


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", "CPU"])
def test_unknown_device_is_a_clear_error(device: str) -> None:
    with pytest.raises(ModelLoadError, match=rf"device '{device}': expected auto, cpu, cuda or cuda:N"):
        pick_device(device)


def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    import torch

    if torch.cuda.is_available():
        assert pick_device("cuda") == "cuda"
        return
    with pytest.raises(ModelLoadError, match="no CUDA device is visible"):
        pick_device("cuda:0")


def test_scores_are_ten_values_in_range(scorer: TransformerScorer) -> None:
    [vector] = scorer.score([("How do I bake bread?", BENIGN)])
    assert isinstance(vector, ValueVector)
    assert all(-1.0 <= s <= 1.0 for s in vector)


def test_same_text_same_scores_across_batch_sizes_and_padding(scorer: TransformerScorer) -> None:
    items: list[Item] = [
        ("How do I bake bread?", BENIGN),
        (None, "Thanks!"),
        ("Tell me about the weather", "It is sunny with a light breeze, about twenty degrees."),
        ("Help", BENIGN * 4 + HARMFUL_TAIL),  # several windows
        (None, "No."),
    ]
    assert_same_scores_across_batches(scorer, items)


def assert_same_scores_across_batches(reference: TransformerScorer, items: list[Item]) -> None:
    """Default-runtime scorers with batch sizes 1, 2 and 7, and ``items[1]`` scored alone, agree to 1e-4."""
    want = [v.to_list() for v in reference.score(items)]
    for batch_size in (1, 2, 7):
        other = TransformerScorer(device="cpu", batch_size=batch_size)
        for got, expected in zip(other.score(items), want):
            assert max(abs(a - b) for a, b in zip(got.to_list(), expected)) < 1e-4
    # Alone, or next to a much longer neighbour (more padding), the scores stay the same.
    alone = reference.score([items[1]])[0].to_list()
    assert max(abs(a - b) for a, b in zip(alone, want[1])) < 1e-4


def test_async_twin_matches(scorer: TransformerScorer) -> None:
    items = [("Hi", "Hello! How can I help you today?")]
    assert asyncio.run(scorer.ascore(items)) == scorer.score(items)


def test_long_response_is_windowed_not_truncated(scorer: TransformerScorer) -> None:
    long_benign = MUSEUM * 10
    answer = long_benign + "\n\n" + THEFT
    windows, owners = scorer._windows([(None, answer)])
    assert len(windows) > 2 and set(owners) == {0}
    guard = Guard("default", scorer)
    assert guard.check(long_benign).decision == "allow"
    assert guard.check(scorer._tokenizer.decode(windows[0].ids, skip_special_tokens=True)).decision == "allow"
    # The harmful paragraph sits far past the first 256 tokens and still blocks the answer.
    verdict = guard.check(answer)
    assert verdict.decision == "block", verdict.explain()


def test_windows_combine_opposition_first(scorer: TransformerScorer) -> None:
    windows, _ = scorer._windows([(None, MUSEUM * 10 + "\n\n" + THEFT)])
    per_window = scorer._forward(windows, pooled_only=False)
    [combined] = scorer.score([(None, MUSEUM * 10 + "\n\n" + THEFT)])
    for i, value in enumerate(combined):
        column = per_window[:, i]
        expected = float(column.min()) if float(column.min()) < -0.3 else float(column.mean())
        assert abs(value - expected) < 1e-5


def test_bad_items_name_the_item(scorer: TransformerScorer) -> None:
    with pytest.raises(ScorerError, match="item 1: response must be a string"):
        scorer.score([(None, "ok"), (None, 3)])  # type: ignore[list-item]
    with pytest.raises(ScorerError, match="item 0: prompt must be a string or None"):
        scorer.score([(["x"], "ok")])  # type: ignore[list-item]
    assert scorer.score([]) == []


def test_shipped_model_has_no_pickles_and_loads_without_torch_load(monkeypatch: pytest.MonkeyPatch) -> None:
    files = {p.name for p in default_model_dir().iterdir()}
    assert {"config.json", "head.safetensors", "card.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    import torch

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", forbidden)
    TransformerScorer(device="cpu")


def test_missing_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a model directory"):
        TransformerScorer(tmp_path, device="cpu")


def test_head_that_does_not_fit_config_is_a_clear_error(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    config = json.loads((model / "config.json").read_text())
    config["hidden"] = 7
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=re.escape("head.safetensors: weights do not fit config.json")):
        TransformerScorer(model, device="cpu")


def test_bad_config_names_the_field(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    config = json.loads((model / "config.json").read_text())
    config["layers"] = "last"
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=re.escape("config.json: layers")):
        TransformerScorer(model, device="cpu")


def test_missing_encoder_is_a_clear_error() -> None:
    with pytest.raises(ModelLoadError, match="cannot load encoder"):
        TransformerScorer(encoder="/nonexistent/encoder", device="cpu")


def test_forward_passes_run_on_the_scorers_own_thread(
    scorer: TransformerScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PyTorch's OpenMP team belongs to the thread running an operator: callers on many threads
    # (Guard's timeout worker, the micro-batcher, asyncio.to_thread) must all land on one.
    import threading
    from concurrent.futures import ThreadPoolExecutor

    seen: set[str] = set()
    run = scorer._run

    def spy(*args: object, **kwargs: object) -> object:
        seen.add(threading.current_thread().name)
        return run(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(scorer, "_run", spy)
    scorer.score([(None, "Hello there.")])
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: scorer.score([(None, f"Answer {n}.")]), range(8)))
    assert len(seen) == 1 and next(iter(seen)).startswith("guardrail-scorer")
