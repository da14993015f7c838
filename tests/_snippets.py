"""Run a Markdown file's Python snippets as a reader would, and report what no longer matches (not collected).

Usage: ``python tests/_snippets.py [--doctests-only] FILE.md...`` in the folder the snippets should
work in (``--doctests-only``: skip blocks without ``>>>``, for pages whose other blocks are fragments). Fenced
``yaml`` blocks whose first line names a file (``# support.yaml``) are written there first, so
snippets can load them. Each ``python`` block runs on its own, in a fresh namespace, so a snippet
that leaves out an import fails here as it would for a reader. A block with ``>>>`` prompts is a
doctest: every shown output must match. Exit status 1 when any block fails, with its line.
"""

from __future__ import annotations

import doctest
import re
import sys
import traceback
from pathlib import Path

FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.M | re.S)
FILE_NAME = re.compile(r"^# ([\w.-]+\.ya?ml)\s*$")


def blocks(text: str) -> list[tuple[str, int, str]]:
    """``(language, line, code)`` of every fenced block, the line being the block's first code line."""
    return [(m.group(1), text.count("\n", 0, m.start(2)) + 1, m.group(2)) for m in FENCE.finditer(text)]


def run(path: Path, *, doctests_only: bool = False) -> int:
    text = path.read_text(encoding="utf-8")
    failed = 0
    for language, _, code in blocks(text):
        if language == "yaml" and (name := FILE_NAME.match(code.splitlines()[0] if code else "")):
            Path(name.group(1)).write_text(code, encoding="utf-8")
    for language, line, code in blocks(text):
        if language != "python" or (doctests_only and ">>> " not in code):
            continue
        where = f"{path.name}:{line}"
        if ">>> " in code:
            test = doctest.DocTestParser().get_doctest(code, {}, where, str(path), line - 1)
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
            ok = runner.run(test, out=sys.stdout.write).failed == 0
        else:
            try:
                exec(compile(code, where, "exec"), {"__name__": "__snippet__"})
                ok = True
            except Exception:
                print(f"{where}: the snippet raised\n{traceback.format_exc()}")
                ok = False
        failed += not ok
        print(f"{where}: {'ok' if ok else 'FAILED'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    only = "--doctests-only" in sys.argv[1:]
    pages = [Path(a).resolve() for a in sys.argv[1:] if a != "--doctests-only"]
    sys.exit(max(run(page, doctests_only=only) for page in pages))
