"""value-guardrail for Langchain: a thin adapter over the core `guardrail` engine.

Install with `pip install "value-guardrail[langchain]"`. The adapter itself arrives with the
integrations work; this package reserves the import name and the wheel layout.
"""

__all__: list[str] = []
