"""The lazy engine: loads the model once, on first use, and hands out the two pipelines.

The generation pipeline comes with a ``VelocityBatcher``: generations running at the same time (the page's
and the API's alike, since both call ``Loaded.generator``) share one model forward per step.

Nothing heavy happens at import or construction. ``get()`` loads under a lock (a second caller waits
for the first one's load instead of starting its own); a failed load is remembered and reported to
every later caller instead of being retried on each click. ``model_slot(kind)`` is the one limit on model runs
at once, the page's and the OpenAI-compatible API's alike: ``--concurrency`` chats (each decodes on its own)
and ``--gen-concurrency`` generations (they share each forward through the batcher).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from janusflow_core import ChatPipeline, GenerationPipeline, JanusFlowBundle, load_pretrained
from janusflow_core.bundle import DEFAULT_MODEL
from janusflow_core.checkpoint import read_sampling
from janusflow_core.pipelines import SamplingDefaults, VelocityBatcher
from janusflow_core.vae import LatentRGB


@dataclass
class Loaded:
    bundle: JanusFlowBundle
    chat: ChatPipeline
    generator: GenerationPipeline
    seconds: float
    _latent_rgb: LatentRGB | None = None
    _fit_lock: threading.Lock = field(default_factory=threading.Lock)

    def latent_rgb(self) -> LatentRGB:
        """The approximate latent-to-RGB preview map, fitted to this VAE on first use."""
        with self._fit_lock:
            if self._latent_rgb is None:
                self._latent_rgb = LatentRGB.fit(self.bundle.vae)
            return self._latent_rgb

    @property
    def image_size(self) -> int:
        """Side of a generated image in pixels (latent side x VAE downsampling)."""
        return self.bundle.config.gen_latent_size * self.bundle.vae.downsample


class EngineError(RuntimeError):
    """The model could not be loaded; the message says why."""


class Engine:
    def __init__(self, model: str | Path | None = None, *, vae: str | Path | None = None, device: str = "auto",
                 dtype: str = "auto", load_8bit: bool = False, concurrency: int = 2, gen_concurrency: int = 8,
                 batching: bool = True, loader: Callable[..., JanusFlowBundle] = load_pretrained):
        self.model = model
        self.concurrency, self.gen_concurrency = concurrency, gen_concurrency
        self._slots = {"chat": threading.BoundedSemaphore(concurrency),
                       "generation": threading.BoundedSemaphore(gen_concurrency)}
        self.batching = batching  # concurrent generations share each forward (pipelines/batching.py)
        self.options = {"vae": vae, "device": device, "dtype": dtype, "load_8bit": load_8bit}
        self._loader = loader
        self._lock = threading.Lock()
        self._loaded: Loaded | None = None
        self._error: str | None = None
        self._loading = False

    # -- what the UI can show before the model is loaded ---------------------------------------------
    @property
    def model_id(self) -> str:
        """The model's name for API clients: its folder's name, or its hub id."""
        if self.model is None:
            return DEFAULT_MODEL.name
        p = Path(str(self.model))
        return p.resolve().name if p.is_dir() else str(self.model)

    @property
    def display_name(self) -> str:
        return f"{self.model_id} (embedded)" if self.model is None else self.model_id

    def sampling_defaults(self) -> SamplingDefaults:
        """The generation pipeline's defaults (steps, guidance weight): the loaded pipeline's, or before it is
        loaded the same settings read from the model folder (hub ids that are not downloaded yet get the
        published defaults)."""
        if self._loaded is not None:
            return self._loaded.generator.defaults
        folder = DEFAULT_MODEL if self.model is None else Path(str(self.model))
        try:
            return SamplingDefaults.from_sampling(read_sampling(folder if folder.is_dir() else None))
        except (OSError, ValueError):
            return SamplingDefaults.from_sampling({})

    @property
    def state(self) -> str:
        if self._loaded is not None:
            return "ready"
        if self._error is not None:
            return "failed"
        return "loading" if self._loading else "idle"

    # -- loading --------------------------------------------------------------------------------------
    def get(self) -> Loaded:
        """The loaded pipelines; loads them on the first call. Raises EngineError if loading failed."""
        if self._loaded is not None:
            return self._loaded
        with self._lock:
            if self._loaded is None and self._error is None:
                self._loading = True
                start = time.perf_counter()
                try:
                    bundle = self._loader(self.model, **self.options)
                    generator = GenerationPipeline(bundle)
                    if self.batching:  # every caller of the generator (page, API) shares the one batcher
                        generator.batcher = VelocityBatcher(bundle.model)
                    self._loaded = Loaded(bundle, ChatPipeline(bundle), generator, time.perf_counter() - start)
                except Exception as exc:  # shown in the UI; the app keeps serving its pages
                    self._error = f"{type(exc).__name__}: {exc}"
                finally:
                    self._loading = False
        if self._loaded is None:
            raise EngineError(f"the model could not be loaded: {self._error}")
        return self._loaded

    def start_loading(self) -> threading.Thread:
        """Load in a background thread (the server answers meanwhile; handlers wait in ``get``)."""
        thread = threading.Thread(target=self._get_quietly, name="janusflow-load", daemon=True)
        thread.start()
        return thread

    def _get_quietly(self) -> None:
        try:
            self.get()
        except EngineError:
            pass  # kept in self._error and shown by status()

    # -- the limit on model runs at once --------------------------------------------------------------
    @contextmanager
    def model_slot(self, cancelled: threading.Event | None = None, poll_s: float = 0.1,
                   kind: str = "chat") -> Iterator[bool]:
        """Hold one of the model runs of ``kind`` ("chat": ``concurrency`` of them, "generation":
        ``gen_concurrency``) while the block runs, waiting for one if all are taken.

        Yields True once a run is held; False, holding nothing, when ``cancelled`` is set while waiting (a
        client that went away gives up its place in the line).
        """
        slots = self._slots[kind]
        while not slots.acquire(timeout=poll_s):
            if cancelled is not None and cancelled.is_set():
                yield False
                return
        try:
            yield True
        finally:
            slots.release()

    # -- status line ------------------------------------------------------------------------------------
    def status(self) -> str:
        """One Markdown line: model, device, dtype (or the loading state / the load error)."""
        if self._loaded is not None:
            b = self._loaded.bundle
            dtype = str(b.dtype).removeprefix("torch.")
            size = self._loaded.image_size
            return (f"**Model** `{b.name}` · **device** `{b.device}` · **dtype** `{dtype}` · "
                    f"{size}×{size} images · loaded in {self._loaded.seconds:.1f} s")
        if self._error is not None:
            return f"**Model failed to load**: {self._error}"
        return f"Loading `{self.display_name}` …"
