"""value-guardrail for LangChain: a guarded chat model and an agent middleware over the core ``guardrail``.

Install with ``pip install "value-guardrail[langchain]"``::

    from guardrail_langchain import GuardedChatModel, ValueGuardrailMiddleware

    model = GuardedChatModel(model=your_model)                         # any chat model, chains included
    agent = create_agent(your_model, tools, middleware=[ValueGuardrailMiddleware()])  # v1 agents

Blocked answers come back as the policy's message; every checked answer carries its verdict in
``response_metadata["guardrail"]``.
"""

from guardrail_langchain._chat_model import GuardedChatModel
from guardrail_langchain._common import METADATA_KEY
from guardrail_langchain._middleware import ValueGuardrailMiddleware

__all__ = ["METADATA_KEY", "GuardedChatModel", "ValueGuardrailMiddleware"]
