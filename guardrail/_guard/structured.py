"""Reading structured answers: JSON and tool calls as the prose they carry.

The scorer was trained on prose. An answer in JSON (structured output, JSON mode) or a tool call
checked as ``name({json arguments})`` is the same content in a syntax it never saw, and the syntax
alone moves its scores: ``magic_function_no_args({})`` reads as rule-breaking. A reader sees keys
and values; so does the scorer after :func:`prose`: identifiers become words, each value goes on a
line under its key, and every string is kept whole, so harmful content in an argument is read as
it would be in a sentence.

Only answers that are structured as a whole are rewritten: a whole JSON document (also inside one
code fence), a tool call, or a window of one (a streamed JSON answer, read piece by piece, starts
or ends like JSON and has keys). Anything else comes back ``None``: an ordinary answer is scored as
it is.
"""

from __future__ import annotations

import json
import re
from typing import Any

STEP = "structured"
"""The reading step's name, as ``Verdict.normalized`` and the ``guardrail.normalized`` span attribute list it."""

_FENCE = re.compile(r"\A\s*```[\w-]*[ \t]*\n(?P<body>.*?)\n?```\s*\Z", re.DOTALL)
_CALL = re.compile(r"\A\s*(?P<name>[A-Za-z_][\w.\-]*)\((?P<args>.*)\)\s*\Z", re.DOTALL)
_EMPTY = re.compile(r"\{\s*\}|\[\s*\]")
_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:')
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"?')
_SCALAR = re.compile(r"-?\d+(?:\.\d+)?|true|false")  # numbers and booleans between a window's strings
_WORD_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|[_\-.]+")


def prose(text: str) -> str | None:
    """``text`` as prose when it is a structured answer (see the module docs), else ``None``.

    >>> prose('magic_function_no_args({})')
    'magic function no args'
    >>> print(prose('{"setup": "Why did the cat sit on the computer?", "punchline": "To watch the mouse."}'))
    setup: Why did the cat sit on the computer?
    punchline: To watch the mouse.
    >>> prose("Sure, here is a bread recipe.") is None
    True
    """
    fenced = _FENCE.match(text)
    body = fenced.group("body") if fenced else text
    call = _CALL.match(body)
    if call is not None:
        args = call.group("args").strip()
        name = words(call.group("name"))
        if not args or _EMPTY.fullmatch(args):
            return name
        read = _document(args)
        if read is None:
            return None  # a call-like sentence ("see print(x) below") is prose already
        return f"{name}: {read}" if read else name
    return _document(body)


def words(identifier: str) -> str:
    """An identifier as words: ``getWeather``, ``get_weather`` and ``get-weather`` read ``get weather``."""
    return " ".join(part for part in _WORD_BREAK.split(identifier) if part).lower()


def _document(text: str) -> str | None:
    stripped = text.strip()
    if not stripped or (stripped[0] not in "{[" and stripped[-1] not in "}]"):
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return _window(stripped)
    if not isinstance(value, (dict, list)):
        return None
    return "\n".join(_lines(value)) or None


def _lines(value: Any, key: str | None = None) -> list[str]:
    """One line per value, under its key's words; nested objects flattened in order."""
    lead = f"{words(key)}: " if key else ""
    if isinstance(value, dict):
        nested = [line for k, v in value.items() for line in _lines(v, str(k))]
        if lead and len(nested) == 1:
            return [f"{lead}{nested[0]}"]
        return [lead.rstrip(), *nested] if lead and nested else nested
    if isinstance(value, list):
        return [line for item in value for line in _lines(item, key)]
    if value is None or value == "":
        return []
    if isinstance(value, bool):
        return [f"{lead}{'yes' if value else 'no'}"]
    return [f"{lead}{value}"]


def _window(text: str) -> str | None:
    """A piece of a JSON document (a streamed window, a cut-off answer): its keys and strings, in order."""
    if not _KEY.search(text):
        return None
    out: list[str] = []
    position = 0
    if text[0] not in '{["':  # the window starts inside a string: its first quote closes it
        close = re.search(r'(?<!\\)"', text)
        if close is None:
            return None
        out.append(_unescape(text[: close.start()]))
        position = close.end()
    for match in _STRING.finditer(text, position):
        between = text[position : match.start()]
        out += _SCALAR.findall(between)
        position = match.end()
        content = _unescape(match.group(1))
        is_key = text[match.end() :].lstrip().startswith(":")
        out.append(f"\n{words(content)}:" if is_key else content)
    out += _SCALAR.findall(text[position:])
    return " ".join(out).replace(" \n", "\n").strip()


def _unescape(raw: str) -> str:
    try:
        return str(json.loads(f'"{raw}"'))
    except ValueError:
        return raw.replace('\\"', '"').replace("\\n", "\n")
