"""Per-browser-session run bookkeeping: a stop flag for the run in progress and a busy marker.

Gradio gives every page (and every gradio_client Client) its own ``session_hash``; the Stop buttons
and the run handlers meet here under that key, so one user's Stop never touches another's run.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .components import refuse


def session_id(request: Any) -> str:
    """The caller's session hash (a fresh id when there is none, e.g. a bare HTTP call)."""
    sid = getattr(request, "session_hash", None)
    return str(sid) if sid else f"anonymous-{uuid.uuid4().hex}"


@dataclass
class Run:
    event: threading.Event = field(default_factory=threading.Event)  # handed to the pipeline
    stopped: bool = False  # the user asked to stop (the pipeline may also set ``event`` itself)
    discarded: bool = False  # the user threw the run's output away (Clear): it must not be shown or kept
    ended: threading.Event = field(default_factory=threading.Event)  # set when the handler has let go


class Runs:
    """At most one run per (session, kind); ``stop`` flags that run and sets its event."""

    def __init__(self, kind: str):
        self.kind = kind
        self._lock = threading.Lock()
        self._runs: dict[str, Run] = {}

    @contextmanager
    def start(self, session: str) -> Iterator[Run]:
        with self._lock:
            if session in self._runs:
                raise refuse(f"A {self.kind} is already running in this session; wait for it or press Stop.")
            run = self._runs[session] = Run()
        try:
            yield run
        finally:
            with self._lock:
                self._runs.pop(session, None)
            run.ended.set()

    def stop(self, session: str, discard: bool = False, wait_s: float = 0.0) -> bool:
        """Ask the session's run to stop; False when nothing was running. With ``discard`` the run sends
        nothing more (its output is being thrown away); ``wait_s`` waits that long for it to let go, so
        that what the caller sends next is not overtaken by an update the run had under way."""
        with self._lock:
            run = self._runs.get(session)
            if run is None:
                return False
            run.stopped = True
            run.discarded = run.discarded or discard
        run.event.set()
        run.ended.wait(wait_s)
        return True
