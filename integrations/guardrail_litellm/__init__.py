"""value-guardrail for LiteLLM: guarded ``completion`` / ``acompletion`` and a proxy guardrail.

Install with ``pip install "value-guardrail[litellm]"``. In code, change one import::

    from guardrail_litellm import completion, verdict_of   # instead of: from litellm import completion

    response = completion(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    verdict_of(response).decision                           # 'allow' | 'log' | 'block' | 'rewrite'
    verdicts_of(response)                                   # one per checked part: content, reasoning, tool calls

In the proxy's ``config.yaml``, add a guardrail with ``guardrail: guardrail_litellm.ValueGuardrail``
and ``mode: post_call`` (see ``proxy_config.yaml`` next to this file).

This package holds no policy or scoring logic: it maps litellm objects to :class:`guardrail.Guard`
calls and verdicts back onto litellm objects.
"""

from __future__ import annotations

import os

# litellm fetches its model cost map from the network at import unless told to use the local copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from guardrail_litellm._guards import default_guard
from guardrail_litellm._mapping import verdict_of, verdicts_of
from guardrail_litellm._proxy import ValueGuardrail
from guardrail_litellm._sdk import (
    AsyncGuardedCompletionStream,
    GuardedCompletionStream,
    acompletion,
    completion,
)

__all__ = [
    "AsyncGuardedCompletionStream",
    "GuardedCompletionStream",
    "ValueGuardrail",
    "acompletion",
    "completion",
    "default_guard",
    "verdict_of",
    "verdicts_of",
]
