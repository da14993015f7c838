"""``python -m guardrail``: the same as the ``guardrail`` command."""

from guardrail._cli import main

main()
