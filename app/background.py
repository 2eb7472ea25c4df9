"""The sampler off the page's path: a run's steps computed in a thread of their own, the newest one kept.

The handler that streams to the page reads from here at its own pace: it asks for anything newer than what
it showed last and gets the newest step (the ones in between are dropped, never queued), so decoding a
preview, encoding a PNG or a slow connection never holds the sampler back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from janusflow_core.sampling import StepState


class SamplerThread:
    """Iterates ``states`` to the end in a daemon thread, publishing each step as the newest."""

    def __init__(self, states: Iterator[StepState]):
        self._states = states
        self._cond = threading.Condition()
        self._newest: StepState | None = None
        self._done = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="janusflow-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for state in self._states:
                with self._cond:
                    self._newest = state
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the reader, which reports it
            self.error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    @property
    def done(self) -> bool:
        return self._done

    @property
    def newest(self) -> StepState | None:
        return self._newest

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds, less if the run ends meanwhile."""
        with self._cond:
            if timeout > 0 and not self._done:
                self._cond.wait_for(lambda: self._done, timeout)

    def newer_than(self, index: int) -> StepState | None:
        """Wait for a step after step ``index`` (0-based; -1 for the first) and return the newest one; None
        when the run ended without one (``error`` then says whether it failed)."""
        with self._cond:
            while not self._done and (self._newest is None or self._newest.index <= index):
                self._cond.wait()
            newest = self._newest
        return newest if newest is not None and newest.index > index else None

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
