"""Scoring: text in, ten value scores out, in one forward pass per batch.

- ``scorer``: ``TransformerScorer``, tokenising, windowing long answers, the forward pass.
- ``runtime``: the torch and ONNX Runtime forward passes behind it.
- ``model``: a model directory (config, weights, card) and its checks.
- ``head``: the regression head on top of the encoder.
- ``batching``: ``MicroBatcher``, many callers' checks batched into one forward pass.

Depends on the kernel and on telemetry (batch sizes) only.
"""
