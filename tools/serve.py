"""Serve the app in-process on a free local port, for tests, screenshots and benchmarks."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.engine import Engine
from app.layout import create_demo, launch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(model: str | Path | None, *, concurrency: int = 2, gen_concurrency: int = 8, preload: bool = True,
          batching: bool = True, device: str = "cpu", dtype: str = "fp32") -> Iterator[tuple[str, Engine]]:
    """Launch on 127.0.0.1 at a free port; yields (url, engine) and closes the server afterwards."""
    engine = Engine(model, device=device, dtype=dtype, batching=batching)
    if preload:
        engine.get()
    demo = create_demo(engine)
    _, url, _ = launch(demo, port=free_port(), concurrency=concurrency, gen_concurrency=gen_concurrency, quiet=True,
                       prevent_thread_lock=True)
    try:
        yield url, engine
    finally:
        demo.close(verbose=False)
