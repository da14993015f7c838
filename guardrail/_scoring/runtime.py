"""Where the scorer's forward pass runs: PyTorch or ONNX Runtime, float32 or dynamic int8.

Tokenising, windowing and combining windows stay in ``_scorer.py`` (one code path); a runtime only
replaces the encoder + pooling + head forward pass of a padded batch::

    runtime     forward pass                                               scores vs torch float32
    torch       PyTorch; float32 on the CPU, bfloat16 on CUDA              the reference
    torch-bf16  PyTorch, encoder in bfloat16 (pooling and head float32)    ~1e-2, see docs/performance.md
    torch-int8  PyTorch, Linear layers dynamically quantised (per channel) drift, see docs/performance.md
    onnx        ONNX Runtime, float32 export of the merged model           ~1e-6
    onnx-int8   ONNX Runtime, weight MatMuls dynamically quantised         drift, see docs/performance.md
    auto        CUDA: torch (bfloat16); CPU: onnx when onnxruntime is installed, else torch

``torch-bf16`` is the fastest honest CPU option where the CPU multiplies bfloat16 natively (AMX or
AVX512-BF16), yet not the default: its scores move by up to ~6e-3 with the batch a text shares
(kernel choice and rounding follow the batch's shape), which breaks "same text, same scores"
(1e-4) under micro-batching. The float32 runtimes keep that guarantee.

The ONNX graph is never shipped: it is exported from the model directory on first use (encoder with
the LoRA adapter merged, pooling and head in one graph, dynamic batch and sequence axes), checked
against PyTorch on a padded batch, and cached under ``$GUARDRAIL_CACHE_DIR`` (default
``~/.cache/value-guardrail``) in a folder named by a hash of the model's weights, the base encoder's
weights and the torch / onnxruntime versions, so a retrained model or an upgrade exports afresh.
Each graph's SHA-256 is recorded beside it at export (``scores.onnx.sha256``) and checked before
every load: a graph that does not match its record (corrupted, or planted in the folder) is
refused with a warning and exported again. The record only proves that the graph is the one this
machine exported, so keep the cache folder private (it is created readable by its owner only).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import os
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from guardrail._exceptions import ModelLoadError
from guardrail._types import Runtime

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

RUNTIMES: tuple[str, ...] = get_args(Runtime)
CPU_DEFAULT = "onnx"
"""What ``auto`` picks on a CPU when onnxruntime is installed (see docs/performance.md)."""
ONNX_RUNTIMES = ("onnx", "onnx-int8")
EXPORT_VERSION = "2"
"""Part of the cache key: bump when the exported graph changes (inputs, outputs, quantisation)."""
EXPORT_TOLERANCE = 1e-4
"""Largest score difference between the float32 export and PyTorch accepted at export time."""
FLOAT32_TOLERANCE = 1e-3
"""Largest |score difference| to PyTorch float32 a float32 runtime may show (measured: ~1e-6)."""
DEFAULT_TOLERANCE = 0.05
"""Largest |score difference| to PyTorch float32, over the ten values of every test-split answer,
for a runtime to be eligible as the CPU default (with at most 0.5 % of decisions changed)."""
ONNX_EXTRA_HINT = 'pip install "value-guardrail[onnx]"'
SPINNING = False
"""Whether ONNX Runtime's idle worker threads spin between calls. Off: the guard shares its cores
with the application, and on a loaded 2-core machine spinning doubled the median latency. A
benchmark may set it to measure a dedicated machine."""


def resolve_runtime(runtime: str, device: str, *, building: bool = False) -> str:
    """Turn ``auto`` into a concrete runtime for ``device`` and check the combination.

    ``building`` (a scorer built from a config or a given head, as training does) resolves ``auto``
    to ``torch``: those need PyTorch modules to train.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
    if device.startswith("cuda"):
        if runtime in ("auto", "torch", "torch-bf16"):
            return "torch"  # bfloat16 on CUDA either way
        raise ValueError(f"runtime {runtime!r} runs on the CPU only; on CUDA use 'torch' (bfloat16)")
    if runtime == "auto":
        return CPU_DEFAULT if not building and onnx_available() else "torch"
    if runtime == "torch-bf16" and not native_bf16():
        logger.warning("this CPU has no native bfloat16 (AMX or AVX512-BF16): runtime 'torch-bf16' is emulated "
                       "and slower than 'onnx' or 'torch'")  # fmt: skip
    if building and runtime in ONNX_RUNTIMES:
        raise ValueError(f"runtime {runtime!r} needs a trained model directory, not a config or a head")
    return runtime


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX tiles or AVX512-BF16).

    Elsewhere PyTorch emulates bfloat16 on the CPU, slower than float32.
    """
    import torch

    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private; absent in old torch
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def onnx_available() -> bool:
    """Whether the ``onnx`` extra (onnxruntime and onnx) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def quantize_int8(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose ``nn.Linear`` layers run in dynamic int8 (weights per channel).

    Per-channel weight scales: per-tensor ones drifted two to three times as far on the test split.
    """
    import copy

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao (DeprecationWarning) and warns that
        # quantized tensor types are deprecated (UserWarning); the eager API still works in 2.13
        # and torchao's CPU int8 path is not faster for this model.
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions", category=UserWarning)
        return quantize_dynamic(copy.deepcopy(module), {torch.nn.Linear: per_channel_dynamic_qconfig})


# -- ONNX Runtime ---------------------------------------------------------------------------------


def cache_root() -> Path:
    """Folder for derived files: ``$GUARDRAIL_CACHE_DIR``, else ``$XDG_CACHE_HOME/value-guardrail``."""
    configured = os.environ.get("GUARDRAIL_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "value-guardrail"


def fingerprint(model_dir: Path, encoder_source: str) -> str:
    """Hash of everything the exported graph depends on: weights, configs, exporter versions.

    Hashes file contents (the base encoder's ~90 MB takes about 0.1 s), so a retrained model in the
    same folder never reuses a stale export. An encoder given as a hub id is keyed by its name.
    """
    import onnxruntime
    import torch

    digest = hashlib.sha256(f"{EXPORT_VERSION}|{torch.__version__}|{onnxruntime.__version__}".encode())
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.name != "card.json")
    encoder = Path(encoder_source)
    if encoder.is_dir():
        files += sorted(p for p in encoder.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors"))
    else:
        digest.update(encoder_source.encode())
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def exportable(
    encoder: nn.Module, head: nn.Module, layers: list[int], names: list[str], spans: tuple[int, int] = (0, 0)
) -> nn.Module:
    """Encoder + pooling (window, and ``spans`` = (tokens, stride) when set) + head as one module
    taking the ``names`` tensors positionally (for the tracer)."""
    from torch import nn

    from guardrail._scoring.head import score_batch

    class Exported(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.head = encoder, head

        def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return score_batch(self.encoder, self.head, dict(zip(names, tensors)), layers, *spans)

    return Exported().eval()


class OnnxForward:
    """An ONNX Runtime session over the exported graph: padded batch in, scores or features out.

    Args:
        model: Path of the ``.onnx`` file.
        threads: Intra-op threads (the scorer passes torch's thread count).
    """

    def __init__(self, model: Path, threads: int) -> None:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if SPINNING else "0")
        options.log_severity_level = 3  # errors only: initializer-folding notes are not for users
        try:
            self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"{model}: ONNX Runtime cannot load it (delete it to export again): {exc}") from exc
        self.path = model
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, batch: Mapping[str, np.ndarray], output: str = "scores") -> np.ndarray:
        """Run one padded batch (int64 arrays named like the tokenizer's outputs)."""
        return self.session.run([output], {name: batch[name] for name in self.inputs})[0]


def import_onnxruntime() -> Any:
    """Import onnxruntime, checking the whole ``onnx`` extra (export and quantisation need onnx too).

    Fails with the extra to install when either is missing.
    """
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as exc:
        raise ModelLoadError(f"the ONNX runtimes need onnxruntime and onnx: {ONNX_EXTRA_HINT}") from exc
    return onnxruntime


def load_onnx(
    runtime: str,
    *,
    model_dir: Path,
    encoder_source: str,
    build: Callable[[], tuple[nn.Module, dict[str, torch.Tensor]]],
    threads: int,
) -> OnnxForward:
    """The session for ``runtime`` (``onnx`` or ``onnx-int8``), exporting into the cache on a miss.

    ``build`` returns the module to export (from :func:`exportable`) and a padded sample batch; it
    is only called when the float32 graph is not cached yet. An unwritable cache folder is not an
    error: the graph is then exported to a temporary folder for this process only.
    """
    import_onnxruntime()
    folder = cache_root() / "onnx" / fingerprint(model_dir, encoder_source)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: what is cached here is run
        return OnnxForward(_ensure(runtime, folder, build), threads)
    except OSError as exc:
        logger.warning("cannot write the ONNX cache %s (%s); exporting to a temporary folder", folder, exc)
    except Exception:
        with contextlib.suppress(OSError):  # a model that failed to load leaves no empty cache folder
            folder.rmdir()
        raise
    with tempfile.TemporaryDirectory(prefix="value-guardrail-onnx-") as tmp:
        return OnnxForward(_ensure(runtime, Path(tmp), build), threads)  # the session keeps its copy


def _ensure(runtime: str, folder: Path, build: Callable[[], tuple[nn.Module, dict[str, torch.Tensor]]]) -> Path:
    fp32 = folder / "scores.onnx"
    if not _verified(fp32):
        module, sample = build()
        with _atomic(fp32) as tmp:
            export(module, sample, tmp)
            check_export(module, sample, tmp)
    if runtime == "onnx":
        return fp32
    int8 = folder / "scores-int8.onnx"
    if not _verified(int8):
        with _atomic(int8) as tmp:
            quantize_onnx_int8(fp32, tmp)
    return int8


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's contents, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_of(graph: Path) -> Path:
    return graph.with_name(graph.name + ".sha256")


def _verified(graph: Path) -> bool:
    """Whether a cached graph exists and matches the hash recorded when it was exported.

    A graph without a record, or with another hash, is not used: it is logged and exported again.
    """
    if not graph.exists():
        return False
    try:
        recorded = _record_of(graph).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        recorded = ""
    if recorded and file_sha256(graph) == recorded:
        return True
    problem = "does not match the SHA-256 recorded at export" if recorded else "has no SHA-256 recorded at export"
    logger.warning("the cached ONNX graph %s %s (corrupted or replaced): not using it, exporting it again",
                   graph, problem)  # fmt: skip
    return False


@contextlib.contextmanager
def _atomic(target: Path) -> Iterator[Path]:
    # Written beside the target and renamed: a concurrent process never reads a half-written graph.
    # A reader between the two renames sees a graph and a record that differ and exports again.
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.onnx")
    record = _record_of(tmp)
    try:
        yield tmp
        record.write_text(file_sha256(tmp) + "\n", encoding="ascii")
        os.replace(record, _record_of(target))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        record.unlink(missing_ok=True)


def export(module: nn.Module, sample: dict[str, torch.Tensor], path: Path) -> None:
    """Export ``module`` (inputs named like ``sample``'s keys) with dynamic batch and sequence axes.

    Uses the TorchScript exporter: the dynamo one needs onnxscript, took 4x longer here and gave a
    graph about 10 % slower in ONNX Runtime.
    """
    import torch

    names = list(sample)
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"scores": {0: "batch"}, "features": {0: "batch"}}
    options: dict[str, Any] = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is deprecated in torch 2.9+ (DeprecationWarning); its tracer warns
        # (TracerWarning) where transformers branches on tensor values, which is why the sample is
        # padded and the export is checked against PyTorch right after; index export notes (UserWarning).
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings(
            "ignore", message=r".*legacy TorchScript-based ONNX export", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index", category=UserWarning)
        torch.onnx.export(
            module,
            tuple(sample[name] for name in names),
            str(path),
            input_names=names,
            output_names=["scores", "features"],
            dynamic_axes=axes,
            opset_version=17,
            **options,
        )


def check_export(module: nn.Module, sample: dict[str, torch.Tensor], path: Path) -> None:
    """Fail unless the exported graph reproduces PyTorch's scores on ``sample`` to ``EXPORT_TOLERANCE``."""
    import torch

    with torch.inference_mode():
        expected = module(*sample.values())[0].numpy()
    got = OnnxForward(path, threads=1).run({k: v.numpy() for k, v in sample.items()})
    error = float(abs(got - expected).max())
    if error > EXPORT_TOLERANCE:
        raise ModelLoadError(f"the ONNX export differs from PyTorch by {error:.2e} (> {EXPORT_TOLERANCE})")


def quantize_onnx_int8(source: Path, target: Path) -> None:
    """Dynamic int8 of the weight MatMuls (per channel); embeddings, attention products and head stay float32.

    Per-channel weight scales drifted about three times less than per-tensor ones on test-split
    answers. Attention's activation-by-activation products are left alone: quantising them gains
    little and costs accuracy.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    products = [n.name for n in graph.node if n.op_type == "MatMul" and not any(i in weights for i in n.input)]
    with _quiet_quantizer():
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=products,
        )


class _DropQuantizerNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    # onnxruntime.quantization logs advice ("consider pre-processing") on the root logger; it does
    # not apply here (shape inference fails on this graph and is not needed for dynamic int8).
    root = logging.getLogger()
    quiet = _DropQuantizerNotes()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)
