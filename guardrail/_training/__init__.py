"""Training and evaluating a value model: on top of scoring and the policy language.

- ``config``: ``TrainConfig``, every hyper-parameter of a run.
- ``train``: ``train``, fine-tuning the encoder and head, calibration.
- ``data``: the labelled sets (FULCRA, Touché23, harm labels, the shipped written examples).
- ``evaluate``: held-out figures of a model and a policy.
- ``card``: the model card written beside a trained model.
"""
