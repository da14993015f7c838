"""The default scorer: a transformer encoder plus a trained value head, one pass for all ten values.

Input is the (prompt, response) text pair. Long responses are not cut off: the response is split
into overlapping token windows (``max_length`` tokens each, ``window_overlap`` shared, the first
``prompt_tokens`` of the prompt repeated in every window), every window is scored, and the
windows are combined per value: if any window opposes the value (score < -0.3) the most
opposing window counts, so a harmful paragraph at the end of a long answer is not averaged
away; otherwise the mean over windows counts. A model with ``span_tokens`` also scores short
spans of each window's response from the same forward pass, and a span that opposes a value
counts like a window (``guardrail._scoring.head.combine_spans``). A window whose scores are not finite numbers (a
broken model or graph) is a :class:`ScorerError`, never clamped into range.
"""

from __future__ import annotations

import asyncio
import copy
import re
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from guardrail._exceptions import ModelLoadError, ScorerError
from guardrail._resources import default_model_dir
from guardrail._scoring.model import ModelConfig, read_card, read_config, resolve_encoder, span_stride
from guardrail._scoring.runtime import ONNX_RUNTIMES, OnnxForward, exportable, load_onnx, quantize_int8, resolve_runtime
from guardrail._scoring.windows import Window, Windower, pad
from guardrail._types import Item, Runtime
from guardrail._values import NO_CONNECTION, ValueVector

_T = TypeVar("_T")

if TYPE_CHECKING:
    import torch


_ROUNDING = 1e-3
"""How far past +-1 a score may land through float rounding alone (bfloat16 tanh); more is a broken model."""

_EXPORT_SAMPLE: list[Item] = [
    ("How do I bake bread?", "Mix flour, water, salt and yeast, knead, let it rise, shape it and bake it until brown."),
    (None, "Thanks!"),
]
"""Traced when exporting to ONNX: a text pair and a lone text of different lengths (padding)."""


def pick_device(device: str) -> str:
    """Resolve ``auto`` to ``cuda`` when a GPU is visible, else ``cpu``; refuse a device torch cannot use."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise ModelLoadError(f"device {device!r}: expected auto, cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r}: no CUDA device is visible to torch (a CPU build?); use cpu or auto")
    return device


def to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    """Move a padded batch to ``device``; to CUDA through pinned host memory, without blocking.

    A pinned source lets the copy run asynchronously on the current stream, so tokenising the
    next batch on the host overlaps the device's work instead of waiting on a synchronous copy.
    On the CPU the tensors are returned as they are.
    """
    if not device.startswith("cuda"):
        return batch
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


def encoder_dtype(device: str, runtime: str, *, building: bool = False) -> torch.dtype:
    """The encoder's weight type: bfloat16 for serving on CUDA and for ``torch-bf16``, else float32.

    A scorer being built for training keeps float32 on CUDA too: the adapter is fitted to the
    float32 base weights it is merged into when the model is loaded.
    """
    import torch

    bf16 = (device.startswith("cuda") and not building) or runtime == "torch-bf16"
    return torch.bfloat16 if bf16 else torch.float32


class TransformerScorer:
    """Scores (prompt, response) pairs in value space with an encoder and a trained head.

    Args:
        model: A model directory (``config.json`` + ``head.safetensors``); default: the one
            shipped in the package.
        encoder: Override the base encoder named by the model (a local path or a hub id).
        device: ``auto`` (CUDA if present, else CPU), ``cpu``, ``cuda``, ``cuda:1``...
        runtime: Where the forward pass runs: ``auto`` (CUDA: ``torch`` in bfloat16; CPU: ``onnx``
            when the ``onnx`` extra is installed, else ``torch``), ``torch`` (float32 on the CPU),
            ``torch-bf16`` (encoder in bfloat16; fast on CPUs with AMX or AVX512-BF16),
            ``torch-int8``, ``onnx`` (ONNX Runtime, float32, exported on first use and cached) or
            ``onnx-int8``. The bfloat16 and int8 runtimes are faster but their scores drift; see
            docs/performance.md for the measured deviation and speed.
        batch_size: Windows per forward pass.
        compile: Compile the encoder with ``torch.compile`` (on CUDA with CUDA graphs, mode
            ``reduce-overhead``). Batches are then padded to fixed shapes, rows to a power of two
            and tokens to a length bucket (:data:`BUCKETS`), so each compiled graph is reused
            across batches. Runtimes ``torch`` and ``torch-bf16`` only.
        config: Build from this configuration instead of ``model`` (training: the head starts
            untrained unless ``head`` is given, and the encoder stays float32 on CUDA too).
        head: A ``ValueHead`` to use instead of the one in ``model``.

    Example:
        >>> scorer = TransformerScorer()  # doctest: +SKIP
        >>> [v] = scorer.score([("How do I bake bread?", "Mix flour, water and yeast...")])  # doctest: +SKIP
        >>> v.benevolence  # doctest: +SKIP
        0.12
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        encoder: str | None = None,
        device: str = "auto",
        runtime: Runtime = "auto",
        batch_size: int = 32,
        config: ModelConfig | None = None,
        head: Any = None,
        compile: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        import torch
        from transformers import AutoTokenizer

        from guardrail._scoring.head import pool, score_batch

        self._torch = torch
        self.model_dir = Path(model) if model is not None else default_model_dir()
        self.config = config or read_config(self.model_dir)
        self.card = read_card(self.model_dir) if config is None else {}
        self.batch_size = batch_size
        self.device = pick_device(device)
        building = config is not None or head is not None
        self.runtime: str = resolve_runtime(runtime, self.device, building=building)
        """The concrete runtime (``auto`` resolved): torch, torch-bf16, torch-int8, onnx or onnx-int8."""
        self.dtype = encoder_dtype(self.device, self.runtime, building=building)
        source = resolve_encoder(encoder or self.config.encoder)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load encoder {source!r}: {exc}") from exc
        if not self._tokenizer.is_fast:
            raise ModelLoadError(f"encoder {source!r} needs a fast tokenizer (for windowing)")
        # Responses are windowed by us, never truncated: silence the length warning.
        self._tokenizer.model_max_length = 1 << 30
        self._windower = Windower(
            self._tokenizer, max_length=self.config.max_length,
            prompt_tokens=self.config.prompt_tokens, window_overlap=self.config.window_overlap,
        )  # fmt: skip
        self._encoder: Any = None
        self._head: Any = None
        self._onnx: OnnxForward | None = None
        self._onnx_source: OnnxForward | None = None  # a background twin's model, its session opened on first use
        self.stop_when: Callable[[], bool] | None = None
        """Asked between forward batches; when it says True, scoring stops with a ``ScorerError``
        (the background lane: its caller gave up, or the process is exiting)."""
        self._worker: ThreadPoolExecutor | None = None
        if self.runtime in ONNX_RUNTIMES:
            # PyTorch modules are only loaded to export, when the graph is not cached yet.
            self._onnx = load_onnx(
                self.runtime,
                model_dir=self.model_dir,
                encoder_source=source,
                build=lambda: self._exportable(source),
                threads=torch.get_num_threads(),
            )
        else:
            if not building:
                # PyTorch's OpenMP thread team belongs to the thread that runs an operator: a model
                # loaded on one thread and run from others pays for two teams on the same cores
                # (measured 1.6-2x slower per check). A serving scorer loads and runs its modules on
                # one thread of its own; a training scorer stays on its caller's thread.
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="guardrail-scorer")
                weakref.finalize(self, self._worker.shutdown, wait=False)
            self._encoder, self._head = self._on_worker(self._load_modules, source, config, head)
            if self.runtime == "torch-int8":
                self._encoder = self._on_worker(quantize_int8, self._encoder)
        self.static_shapes = compile
        """Whether batches are padded to fixed shapes (a compiled encoder)."""
        if compile:
            if self.runtime not in ("torch", "torch-bf16"):
                raise ModelLoadError(f"compile needs runtime torch or torch-bf16, not {self.runtime!r}")
            mode = "reduce-overhead" if self.device.startswith("cuda") else "default"
            self._encoder = torch.compile(self._encoder, mode=mode, dynamic=False)
        self._lock = threading.Lock()
        self._pool = pool
        self._score_batch = score_batch

    def _on_worker(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn`` on this scorer's PyTorch thread (see ``__init__``), or here when it has none."""
        if self._worker is None:
            return fn(*args)
        return self._worker.submit(fn, *args).result()

    def _load_modules(self, source: str, config: ModelConfig | None, head: Any, **options: Any) -> tuple[Any, Any]:
        """The encoder (adapter merged) and the value head, in eval mode on this scorer's device."""
        from safetensors.torch import load_file
        from transformers import AutoModel

        from guardrail._scoring.head import ValueHead

        try:
            encoder = AutoModel.from_pretrained(source, use_safetensors=True, dtype=self.dtype, **options)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load encoder {source!r}: {exc}") from exc
        if self.config.adapter is not None and config is None:
            encoder = self._with_adapter(encoder, self.model_dir / "adapter.safetensors")
        encoder.eval().to(self.device)
        width = encoder.config.hidden_size * len(self.config.layers)
        if head is None:
            head = ValueHead(width, self.config.hidden)
            if config is None:
                file = self.model_dir / "head.safetensors"
                try:
                    head.load_state_dict(self._read_head(file, load_file))
                except RuntimeError as exc:
                    raise ModelLoadError(f"{file}: weights do not fit config.json: {exc}") from exc
        return encoder, head.eval().to(self.device)

    def _exportable(self, source: str) -> tuple[Any, dict[str, torch.Tensor]]:
        # Eager attention exports as plain MatMul/Softmax, the pattern ONNX Runtime fuses; the
        # sample has two windows of different lengths so that padding is traced and checked.
        encoder, head = self._load_modules(source, None, None, attn_implementation="eager")
        sample = self.collate(self._windows(_EXPORT_SAMPLE)[0])
        spans = (self.config.span_tokens, span_stride(self.config))
        return exportable(encoder, head, self.config.layers, list(sample), spans), sample

    def _with_adapter(self, encoder: Any, file: Path) -> Any:
        # Merged into the base weights once at load: scoring then costs what the base costs.
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
        from safetensors.torch import load_file

        adapter = self.config.adapter
        assert adapter is not None
        wrapped = get_peft_model(
            encoder,
            LoraConfig(r=adapter.rank, lora_alpha=adapter.alpha, target_modules=adapter.target_modules),
        )
        try:
            result = set_peft_model_state_dict(wrapped, load_file(str(file)))
        except (FileNotFoundError, OSError, RuntimeError) as exc:
            raise ModelLoadError(f"{file}: cannot load adapter weights: {exc}") from exc
        if result.unexpected_keys:
            raise ModelLoadError(f"{file}: unexpected adapter weights {result.unexpected_keys[:3]}")
        return wrapped.merge_and_unload()

    @staticmethod
    def _read_head(file: Path, load_file: Any) -> dict[str, Any]:
        try:
            return dict(load_file(str(file)))
        except (FileNotFoundError, OSError) as exc:
            raise ModelLoadError(f"{file}: cannot read head weights: {exc}") from exc

    @property
    def encoder(self) -> Any:
        """The encoder module (a ``transformers`` model), e.g. to wrap it with an adapter for training."""
        self._need_torch("encoder")
        return self._encoder

    def replace_encoder(self, encoder: Any) -> None:
        """Swap in another encoder (used by training), on this scorer's device."""
        self._need_torch("replace_encoder")
        with self._lock:
            self._encoder = encoder.eval().to(self.device)

    def replace_head(self, head: Any) -> None:
        """Swap in another value head (used by training), on this scorer's device."""
        self._need_torch("replace_head")
        with self._lock:
            self._head = head.eval().to(self.device)

    def _need_torch(self, what: str) -> None:
        if self.runtime != "torch":
            raise ScorerError(f"{what} needs runtime 'torch' (this scorer runs {self.runtime!r})")

    @property
    def model_id(self) -> str:
        """Name of the model, recorded on spans."""
        return self.config.model_id

    def score(self, items: Sequence[Item]) -> list[ValueVector]:
        """Score a batch of (prompt or None, response) pairs; one vector per pair, in order."""
        if not items:
            return []
        windows, owners = self._windows(items)
        scores = self._forward(windows, pooled_only=False).numpy()
        return _combine(scores, owners, len(items))

    def background(self) -> TransformerScorer:
        """A twin for low-priority work: same model and results, forward passes of its own.

        The twin runs its forward passes on the thread that calls it (an ONNX twin opens its own
        single-threaded session there on first use), so a worker thread at low OS priority, the
        :class:`MicroBatcher`'s background lane, scores large answers at low priority while this
        scorer keeps serving small ones. Weights are shared: swap encoder or head before making one.
        """
        twin = copy.copy(self)
        # A fast tokenizer changes its own truncation state on every call: two threads need two.
        twin._tokenizer = copy.deepcopy(self._tokenizer)
        twin._lock = threading.Lock()
        twin._worker = None
        if not self.device.startswith("cuda"):
            twin.batch_size = min(self.batch_size, 4)  # short forward passes: a caller who gave up is let go soon
        if self._onnx is not None:
            twin._onnx = None
            twin._onnx_source = self._onnx
        return twin

    async def ascore(self, items: Sequence[Item]) -> list[ValueVector]:
        """Async twin of :meth:`score`: runs the forward pass in a worker thread."""
        return await asyncio.to_thread(self.score, items)

    def features(self, items: Sequence[Item]) -> torch.Tensor:
        """Pooled encoder features of each pair's first window (what the head is trained on)."""
        return self._forward(self.first_windows(items), pooled_only=True)

    def first_windows(self, items: Sequence[Item]) -> list[Window]:
        """Token ids of each pair's first window: training sees what scoring sees, truncated."""
        windows, owners = self._windows(items)
        first: dict[int, Window] = {}
        for window, owner in zip(windows, owners):
            first.setdefault(owner, window)
        return [first[n] for n in range(len(items))]

    def collate(self, windows: Sequence[Window], width: int | None = None) -> dict[str, torch.Tensor]:
        """Pad windows into one batch of tensors on this scorer's device (``width``: tokens per row)."""
        arrays = pad(windows, self._windower.pad_id, types=self._windower.types, width=width)
        return to_device({k: self._torch.from_numpy(v) for k, v in arrays.items()}, self.device)

    def _windows(self, items: Sequence[Item]) -> tuple[list[Window], list[int]]:
        """Token windows of every item, and for each window the index of the item it belongs to."""
        return self._windower.windows(items)

    def _forward(self, windows: list[Window], *, pooled_only: bool) -> torch.Tensor:
        with self._lock:
            return self._on_worker(self._forward_now, windows, pooled_only)

    def _forward_now(self, windows: list[Window], pooled_only: bool) -> torch.Tensor:
        torch = self._torch
        # Sorting by length keeps padding (and so wasted compute) small within each batch.
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids))
        results = []
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                if self.stop_when is not None and self.stop_when():
                    raise ScorerError("scoring stopped: the caller gave up")
                chunk = [windows[i] for i in order[start : start + self.batch_size]]
                # Results stay on the device until all chunks are queued: on CUDA the host pads
                # the next chunk while the device still computes this one, and one copy back ends it.
                if self.static_shapes:
                    rows, width = _static_shape(len(chunk), max(len(w.ids) for w in chunk), self.config.max_length)
                    batch = self.collate(chunk + [self._windower.filler()] * (rows - len(chunk)), width)
                    results.append(self._run(batch, pooled_only)[: len(chunk)].float())
                else:
                    results.append(self._run(self.collate(chunk), pooled_only).float())
            ordered = torch.cat(results).cpu()
        out = torch.empty_like(ordered)
        out[torch.tensor(order)] = ordered
        return out

    def _run(self, batch: dict[str, torch.Tensor], pooled_only: bool) -> torch.Tensor:
        """The runtime-specific part: one padded batch through encoder, pooling and head."""
        if self._onnx is None and self._onnx_source is not None:
            self._onnx = self._twin_session(self._onnx_source)
        if self._onnx is not None:
            arrays = {k: v.numpy() for k, v in batch.items()}
            return self._torch.from_numpy(self._onnx.run(arrays, "features" if pooled_only else "scores"))
        if pooled_only:
            return self._pool(self._encoder, batch, self.config.layers)
        scores, _ = self._score_batch(self._encoder, self._head, batch, self.config.layers,
                                      self.config.span_tokens, span_stride(self.config))  # fmt: skip
        return scores

    @staticmethod
    def _twin_session(source: OnnxForward) -> OnnxForward:
        # One thread, opened by the (low-priority) thread that runs it; a graph that lived in a
        # temporary folder is gone, and the twin then shares the session it came from.
        if not source.path.is_file():
            return source
        return OnnxForward(source.path, threads=1)


BUCKETS = (32, 64, 128, 256, 512)
"""Token widths a compiled scorer pads batches to (capped at the model's window length)."""


def _static_shape(rows: int, longest: int, max_length: int) -> tuple[int, int]:
    """The fixed (rows, tokens) a batch is padded to: rows to a power of two, tokens to a bucket."""
    width = next((b for b in BUCKETS if b >= longest), max_length)
    return 1 << (rows - 1).bit_length(), min(max(width, longest), max(max_length, longest))


def _combine(scores: np.ndarray, owners: list[int], count: int) -> list[ValueVector]:
    """One vector per item from its windows' scores (``owners[w]``: window ``w``'s item).

    An item with one window takes its scores; with more, per value the most opposing window when
    any opposes (score < -0.3), else the mean. Non-finite or out-of-range scores name the item.
    """
    window = np.zeros(count, dtype=np.int64)
    window[np.asarray(owners, dtype=np.int64)] = np.arange(len(owners))  # an item's window (its only one, mostly)
    combined = scores[window]
    several = (np.bincount(owners, minlength=count) > 1).tolist()
    if any(several):
        groups: dict[int, list[int]] = {}
        for w, owner in enumerate(owners):
            if several[owner]:
                groups.setdefault(owner, []).append(w)
        for item, rows in groups.items():
            lowest, mean = scores[rows].min(axis=0), scores[rows].mean(axis=0)
            combined[item] = np.where(lowest < -NO_CONNECTION, lowest, mean)
    broken = ~np.isfinite(scores).all(axis=1)
    if broken.any():
        item = owners[int(np.flatnonzero(broken)[0])]
        raise ScorerError(f"item {item}: the model produced non-finite scores (NaN or infinity)")
    over = np.abs(combined) > 1.0 + _ROUNDING
    if over.any():
        item = int(np.flatnonzero(over.any(axis=1))[0])
        worst = max(combined[item].tolist(), key=abs)
        raise ScorerError(f"item {item}: the model produced scores outside [-1, 1]: {worst:+.4f}")
    # tanh keeps scores in [-1, 1]; only float rounding can overshoot, by a hair.
    return [ValueVector._checked(row) for row in np.clip(combined, -1.0, 1.0).tolist()]
