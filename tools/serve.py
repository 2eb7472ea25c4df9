"""Serve the app in-process on a free local port, for tests, screenshots and benchmarks."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.engine import Engine
from app.layout import create_demo, launch
from app.openai_api import OpenAIAPI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(model: str | Path | None, *, concurrency: int = 2, gen_concurrency: int = 8, preload: bool = True,
          batching: bool = True, device: str = "cpu", dtype: str = "fp32",
          api_key: str | None = None) -> Iterator[tuple[str, Engine]]:
    """Launch on 127.0.0.1 at a free port, the OpenAI-compatible API under /v1 included (``api_key``: the
    key it requires); yields (url, engine) and closes the server afterwards."""
    engine = Engine(model, device=device, dtype=dtype, concurrency=concurrency, gen_concurrency=gen_concurrency,
                    batching=batching)
    if preload:
        engine.get()
    demo = create_demo(engine)
    _, url, _ = launch(demo, port=free_port(), concurrency=concurrency, gen_concurrency=gen_concurrency, quiet=True,
                       prevent_thread_lock=True, api=OpenAIAPI(engine, api_key=api_key).router)
    try:
        yield url, engine
    finally:
        demo.close(verbose=False)
