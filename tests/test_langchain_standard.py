"""LangChain's own standard chat-model tests (``langchain-tests``), run against ``GuardedChatModel``.

Every partner package runs these; a guarded model passes them as the model it wraps does. The
wrapped model is ``ScriptedChatModel`` (offline, deterministic; tool calling, tool choice,
structured output by tools, JSON schema and JSON mode, usage metadata, a per-call model override,
stop sequences). The suite runs on the bare scripted model too, so a failure of the guarded one is
the wrapper's. The guard is the process-wide shared guard of the shipped ``shadow`` policy on the
shipped model: every answer is really scored, held back while it streams and decided under the
default rules, and the verdict recorded, but no decision alters an answer. The suite measures the
wrapper, not the scorer's judgement of its test answers (that the default policy blocks a
"pirate" greeting is a scorer matter); ``test_langchain_conformance.py`` covers what a blocking
decision does to each kind of call.

Capability flags are the scripted model's, set honestly. The standard tests that skip, and why:

- ``test_init_from_env`` (bare model only): the scripted model reads nothing from the environment.
  The guarded model reads ``$GUARDRAIL_POLICY`` and is tested with it.
- ``test_serdes``: neither model is ``lc_serializable`` (a guard holds a scorer and telemetry).
- ``test_image_inputs``, ``test_image_tool_message``, ``test_pdf_inputs``, ``test_pdf_tool_message``,
  ``test_audio_inputs``, ``test_anthropic_inputs``: no media or provider-specific inputs; the tests
  also fetch files over the network.
- ``test_stream_time``: needs recorded HTTP (VCR); there is no HTTP.
- ``test_usage_metadata``'s details (audio, reasoning, cache tokens) are not listed as supported,
  so those parts do not run; the token counts do.
"""

from __future__ import annotations

from typing import Any

from _scripted_chat import ScriptedChatModel
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from guardrail_langchain import GuardedChatModel


class _Scripted:
    """The scripted model's capabilities (shared by the bare and the guarded runs)."""

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "scripted-chat-2"

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True


class _Guarded(_Scripted):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return GuardedChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": ScriptedChatModel(), "policy": "shadow"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return {"GUARDRAIL_POLICY": "strict"}, {"model": ScriptedChatModel()}, {"policy": "strict"}


class _Bare(_Scripted):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ScriptedChatModel


class TestGuardedChatModelUnit(_Guarded, ChatModelUnitTests):
    """The standard unit tests on ``GuardedChatModel(model=ScriptedChatModel())``."""


class TestGuardedChatModelIntegration(_Guarded, ChatModelIntegrationTests):
    """The standard integration tests on ``GuardedChatModel(model=ScriptedChatModel())``."""


class TestScriptedChatModelUnit(_Bare, ChatModelUnitTests):
    """The same unit tests on the bare scripted model: the yardstick's yardstick."""


class TestScriptedChatModelIntegration(_Bare, ChatModelIntegrationTests):
    """The same integration tests on the bare scripted model."""
