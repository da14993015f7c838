"""Hot reload: what one revision of a policy decides with, and the watch that swaps in each valid change.

A guard holds one :class:`Revision` (the policy, its engine, its reader and its shadow candidate's
engine) and replaces it whole by one attribute assignment, so a check that took a revision at its
start decides, records and enforces under that revision only, whatever is swapped in meanwhile.

:class:`FileWatch` polls the files a policy is read from (the file, its ``extends`` parents, its
shadow candidate's files) by modification time, size and inode, which also catches a Kubernetes
ConfigMap's symlink swap; polling needs no platform watcher and costs a few ``stat`` calls a second.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from guardrail._guard.reading import Reader
from guardrail._policy.engine import Engine
from guardrail._policy.schema import Policy

DEFAULT_INTERVAL_S = 1.0
"""How often a watched policy's files are checked for changes."""


Fingerprint = tuple[tuple[int, int, int] | None, ...]


@dataclass(frozen=True, slots=True)
class Revision:
    """Everything a check decides with, from one reading of the policy's files."""

    policy: Policy
    engine: Engine
    reader: Reader
    shadow: Engine | None
    """The shadow candidate's engine (decided beside ``engine``, never applied)."""
    files: tuple[Path, ...] = ()
    """The files this revision was read from (empty for a policy passed in as an object)."""
    fingerprint: Fingerprint = ()
    """:func:`fingerprint` of ``files``, taken before they were read."""

    @property
    def hash(self) -> str:
        """The policy's content hash: the revision id recorded on every verdict."""
        return self.engine.policy_hash


def fingerprint(files: Sequence[Path]) -> Fingerprint:
    """Each file's (mtime_ns, size, inode), ``None`` for a missing one: any edit or replacement changes it."""
    out: list[tuple[int, int, int] | None] = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class FileWatch:
    """Calls ``owner.poll()`` every ``interval_s`` seconds on a daemon thread, for as long as ``owner`` lives.

    The thread holds the owner weakly: a guard that is no longer used is collected and its watch
    ends, so watching never keeps a guard, or the process, alive.
    """

    def __init__(self, owner: object, poll: Callable[[object], None], interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"reload interval must be > 0 seconds, got {interval_s!r}")
        self._stop = threading.Event()
        ref = weakref.ref(owner)
        stop = self._stop

        def run() -> None:
            while not stop.wait(interval_s):
                target = ref()
                if target is None:
                    return
                poll(target)
                del target  # hold no strong reference while waiting

        self._thread = threading.Thread(target=run, name="guardrail-policy-watch", daemon=True)
        self._thread.start()
        weakref.finalize(owner, stop.set)

    def stop(self) -> None:
        """Stop watching (the thread ends within one interval)."""
        self._stop.set()
