"""Property tests of the stream splitter (``_Window``): for any text, chunking and settings.

The splitter is driven exactly as ``GuardedStream`` drives it: after every chunk, score each due
window; at the end, the final windows. A window either passes (``passed``) or blocks, which ends
the stream. What must always hold: released text is a prefix of the received text, held-back
streams never release text that has not passed, windows cover all the text and never exceed
``chunk_size + context_size``, and a stream whose windows all pass releases all its text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail._guard.streaming import _Window
from guardrail._policy.schema import Streaming

TEXT = st.text(alphabet=st.sampled_from("ab \n.é"), max_size=400)
SETTINGS = st.builds(
    Streaming,
    chunk_size=st.integers(1, 60),
    context_size=st.integers(0, 60),
    stream_first=st.booleans(),
)


@dataclass
class Run:
    """What one simulated stream did."""

    windows: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of each scored window
    released: str = ""
    blocked: bool = False


def cut(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in pairwise(points)]


def simulate(window: _Window, chunks: list[str], block_at: int | None) -> Run:
    """Drive the window like GuardedStream; the ``block_at``-th window blocks (``None``: all pass)."""
    run = Run()
    received = ""

    def score(final: bool) -> bool:
        """Score due windows; False when one blocked."""
        while (text := window.due(final)) is not None:
            end = window._end
            assert text == window.text[end - len(text) : end]  # a window is a slice ending where scoring got to
            run.windows.append((end - len(text), end))
            if block_at is not None and len(run.windows) - 1 == block_at:
                run.blocked = True
                return False
            window.passed()
            release()
        return True

    def release() -> None:
        run.released += window.releasable()
        assert received.startswith(run.released)
        if not window.settings.stream_first:
            assert len(run.released) <= window.scored  # nothing leaves before it passed

    for chunk in chunks:
        window.feed(chunk)
        received += chunk
        if window.settings.stream_first:
            release()
        if not score(final=False):
            return run
    if score(final=True):
        release()
    return run


@settings(max_examples=300, deadline=None)
@given(text=TEXT, cuts=st.lists(st.integers(0, 400), max_size=30), streaming=SETTINGS)
def test_windows_cover_the_text_and_everything_is_released_when_all_pass(
    text: str, cuts: list[int], streaming: Streaming
) -> None:
    window = _Window(streaming)
    run = simulate(window, cut(text, cuts), block_at=None)
    assert run.released == text
    span = streaming.chunk_size + streaming.context_size
    assert all(0 < end - start <= span for start, end in run.windows)
    covered = 0
    for start, end in run.windows:
        assert start <= covered < end or covered == len(text)  # no gap between consecutive windows
        covered = max(covered, end)
    assert covered == len(text)


@settings(max_examples=300, deadline=None)
@given(
    text=TEXT,
    cuts=st.lists(st.integers(0, 400), max_size=30),
    streaming=SETTINGS,
    block_at=st.integers(0, 20),
)
def test_a_blocked_stream_never_releases_what_did_not_pass(
    text: str, cuts: list[int], streaming: Streaming, block_at: int
) -> None:
    window = _Window(streaming)
    run = simulate(window, cut(text, cuts), block_at=block_at)
    assert text.startswith(run.released)
    if run.blocked and not streaming.stream_first:
        passed = run.windows[-2][1] if len(run.windows) > 1 else 0
        assert len(run.released) <= passed  # the blocking window's new text never went out
