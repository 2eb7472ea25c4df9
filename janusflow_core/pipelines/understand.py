"""Multimodal chat: images + conversation -> streamed answer.

The LLM decodes with transformers' ``generate`` (KV cache, greedy or temperature/top-p sampling) on
the image-filled input embeddings; a streamer hands out text pieces as they are decoded and a stop
event ends generation within one token.

The fast decode path (``fast_decode=True``, the default) changes nothing for float32 models on the CPU. For
bf16/fp16 models on the CPU it runs the attention in float32 (:mod:`janusflow_core.modeling.attention`) and,
for bf16, the one-row matrix-vector products through an AVX2 kernel (:mod:`janusflow_core.modeling.matvec`):
1.4x the tokens/s of transformers' decode on the 1.3B architecture (docs/benchmarks.md). On CUDA it keeps the
keys and values in a static cache (preallocated for prompt + answer), which lets transformers compile the
decode step with CUDA graphs (``torch.compile(mode="reduce-overhead")``). ``fast_decode=False`` is
transformers' default decode (dynamic cache, the attention and products in the model's dtype). In float32
both give the same tokens; in bf16 the fast path rounds differently in the last bit (and closer to the float32
model), so a near-tie between two tokens can go the other way (tests/test_fast_paths.py and
tests/test_matvec.py pin the tokens and bound the logits).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    StaticCache,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from .. import limits
from ..bundle import JanusFlowBundle
from ..modeling import fast_matvec, float32_attention, use_matvec
from ..processing import BatchedInputs

Message = Mapping[str, Any]


class _StopOnEvent(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class SeededSampler(LogitsProcessor):
    """Temperature + top-p sampling from a private ``torch.Generator``.

    It turns the scores into a one-hot choice, so ``generate`` runs greedy on top of it: each call has its
    own random stream (reproducible with its seed, and unaffected by other calls running at the same time),
    where ``do_sample=True`` would draw from torch's global RNG.
    """

    def __init__(self, temperature: float, top_p: float, seed: int | None):
        self.temperature, self.top_p, self.seed = float(temperature), float(top_p), seed
        self.generator: torch.Generator | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.generator is None:
            self.generator = torch.Generator(device=scores.device)
            self.generator.manual_seed(self.seed) if self.seed is not None else self.generator.seed()
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        sorted_p[(sorted_p.cumsum(-1) - sorted_p) > self.top_p] = 0  # keep the smallest set reaching top_p
        choice = order.gather(-1, torch.multinomial(sorted_p, 1, generator=self.generator))  # (B, 1)
        return torch.full_like(scores, float("-inf")).scatter_(-1, choice, 0.0)


class _CountingStreamer(TextIteratorStreamer):
    """TextIteratorStreamer that also counts the generated tokens."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.new_tokens = 0
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if self._seen_prompt:  # the first put() is the prompt (empty with inputs_embeds)
            self.new_tokens += int(value.numel())
        self._seen_prompt = True
        super().put(value)


def static_cache_length(prompt_len: int, max_new_tokens: int, device: torch.device, context: int) -> int:
    """Positions to preallocate for a static KV cache: prompt + answer, rounded up to a multiple of 256 on
    CUDA (each length is a new CUDA graph there; the wasted positions are masked), exact elsewhere (where
    every position is read at every step)."""
    n = prompt_len + max_new_tokens
    if device.type == "cuda":
        n = -(-n // 256) * 256
    return min(n, max(context, prompt_len + max_new_tokens))


def decode(model: Any, embeds: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, *,
           fast_decode: bool | None = None, static_cache: bool | None = None, **generate_kwargs: Any) -> Any:
    """The LLM's ``generate`` from input embeddings (B, T, D); other keywords go to ``generate``.

    ``fast_decode`` runs bf16/fp16 attention on the CPU in float32, bf16 one-row products on the CPU through
    the AVX2 kernel and, with ``static_cache`` (default: on CUDA), keeps the keys and values in a preallocated
    static cache, which lets transformers compile the decode step with CUDA graphs on CUDA (module
    docstring). ``fast_decode=False``: transformers' default; None: fast.
    """
    lm = model.language_model
    if fast_decode is None:
        fast_decode = True
    if static_cache is None:
        static_cache = model.device.type == "cuda"
    if fast_decode and model.device.type == "cpu" and model.dtype == torch.bfloat16:
        use_matvec(lm)  # once per model: its bf16 matrix-vector products take the AVX2 kernel (modeling/matvec.py)
    with torch.inference_mode(), float32_attention(fast_decode), fast_matvec(fast_decode):
        cache = None
        if fast_decode and static_cache:
            length = static_cache_length(embeds.shape[1], max_new_tokens, model.device,
                                         lm.config.max_position_embeddings)
            cache = StaticCache(config=lm.config, max_cache_len=length)
        return lm.generate(inputs_embeds=embeds, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                           use_cache=True, cache=cache, **generate_kwargs)


def generate_tokens(bundle: JanusFlowBundle, batch: BatchedInputs, max_new_tokens: int, temperature: float = 0.0,
                    top_p: float = 1.0, streamer: Any = None, stop_event: threading.Event | None = None,
                    output_scores: bool = False, seed: int | None = None, fast_decode: bool | None = None) -> Any:
    """Run the LLM's ``generate`` on a processed batch: greedy when temperature is 0, else temperature +
    top-p sampling from a generator of this call's own (seeded with ``seed``). ``fast_decode``: the fast path
    of the module docstring (None: fast); False is transformers' default decode."""
    model, special = bundle.model, bundle.processor.special_tokens
    batch = batch.to(model.device)
    with torch.inference_mode():
        embeds = model.prepare_inputs_embeds(batch.input_ids, batch.pixel_values, batch.images_seq_mask,
                                             batch.images_emb_mask)
    sampler = [SeededSampler(temperature, top_p, seed)] if temperature > 0 else []
    return decode(
        model, embeds, batch.attention_mask, max_new_tokens, fast_decode=fast_decode,
        pad_token_id=special.pad, eos_token_id=special.eos, bos_token_id=special.bos,
        streamer=streamer, top_k=None,
        stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop_event)]) if stop_event else None,
        logits_processor=LogitsProcessorList(sampler), do_sample=False, temperature=None, top_p=None,
        output_scores=output_scores, return_dict_in_generate=output_scores)


def check_chat_inputs(max_new_tokens: int, temperature: float, top_p: float,
                      seed: int | None = None) -> tuple[int, float, float, int | None]:
    """Check the decoding settings against :mod:`janusflow_core.limits`; raises InputError."""
    max_new_tokens = limits.check_number("max_new_tokens", max_new_tokens, limits.MAX_NEW_TOKENS, integer=True)
    temperature = limits.check_number("temperature", temperature, limits.TEMPERATURE)
    top_p = limits.check_number("top_p", top_p, limits.TOP_P)
    if seed is not None:
        seed = limits.check_number("seed", seed, limits.SEED, integer=True)
    return max_new_tokens, temperature, top_p, seed


class ChatPipeline:
    def __init__(self, bundle: JanusFlowBundle, fast_decode: bool | None = None):
        """``fast_decode``: decode through the fast path (the module docstring); False gives transformers'
        default decode; None (default): fast. A bf16 model on the CPU starts building the matrix-vector
        kernel here, in the background, so that it is ready by the first answer."""
        if bundle.processor is None:
            raise ValueError("chat needs a processor (tokenizer + image settings); load the bundle with one")
        self.bundle = bundle
        self.processor = bundle.processor
        self.model = bundle.model
        self.fast_decode = fast_decode
        if fast_decode is not False and self.model.device.type == "cpu" and self.model.dtype == torch.bfloat16:
            use_matvec(self.model.language_model)

    def _context_limit(self) -> int:
        return self.bundle.config.llm.max_position_embeddings

    def prepare(self, conversations: Sequence[Sequence[Message]], images: Sequence[Sequence[Any] | None] | None = None,
                system_prompt: str | None = None) -> BatchedInputs:
        return self.processor(list(conversations), images, system_prompt=system_prompt,
                              max_length=self._context_limit() - 1)

    def prompt_length(self, messages: Sequence[Message], images: Sequence[Any] | None = None,
                      system_prompt: str | None = None) -> int:
        """The conversation's prompt in tokens, image tokens and the answer's ``Assistant:`` included."""
        return len(self.processor.encode_chat(messages, images, system_prompt)["input_ids"])

    def fit_context(self, messages: Sequence[Message], *, max_new_tokens: int, system_prompt: str | None = None,
                    answer_room: int = 128) -> tuple[list[Message], int]:
        """The conversation with its oldest exchanges dropped until the prompt leaves room for the answer.

        Room for ``min(max_new_tokens, answer_room, context / 4)`` answer tokens is kept; an exchange is
        a user message and the replies up to the next one, and its images (each message's ``images``) go
        with it. The latest user message is always kept: if it alone leaves less room, the answer is
        shorter; if it alone does not fit the context, InputError. Returns (messages, exchanges dropped).
        """
        context = self._context_limit()
        room = min(int(max_new_tokens), answer_room, context // 4)
        kept, dropped = list(messages), 0
        while True:
            n = self.prompt_length(kept, system_prompt=system_prompt)
            if n <= context - room:
                return kept, dropped
            later_user = [i for i, m in enumerate(kept) if i > 0 and m["role"] == "user"]
            if not later_user:  # only the latest user message is left
                if n < context:
                    return kept, dropped
                raise limits.InputError(
                    f"the latest message is {n} tokens with its images; the model's context is {context} tokens, "
                    "the answer included. Shorten it or attach fewer images.")
            kept, dropped = kept[later_user[0]:], dropped + 1

    def stream(self, messages: Sequence[Message], images: Sequence[Any] | None = None, *, max_new_tokens: int = 512,
               temperature: float = 0.0, top_p: float = 0.95, seed: int | None = None,
               stop_event: threading.Event | None = None, system_prompt: str | None = None,
               stats: dict[str, Any] | None = None) -> Iterator[str]:
        """Yield the answer's text pieces as they are decoded. ``stats`` (if given) is filled at the end
        with prompt_tokens, new_tokens, seconds and tokens_per_s."""
        max_new_tokens, temperature, top_p, seed = check_chat_inputs(max_new_tokens, temperature, top_p, seed)
        batch = self.prepare([messages], [images] if images is not None else None, system_prompt)
        prompt_len = batch.input_ids.shape[1]
        max_new = min(int(max_new_tokens), self._context_limit() - prompt_len)
        tok = self.processor.tokenizer
        streamer = _CountingStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
        stop_event = stop_event or threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            try:
                generate_tokens(self.bundle, batch, max_new, temperature, top_p, streamer, stop_event,
                                seed=seed, fast_decode=self.fast_decode)
            except BaseException as exc:  # surfaced in the caller's thread below
                error.append(exc)
                streamer.end()

        start = time.perf_counter()
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        started = False  # the answer's leading space (after "Assistant:") is not part of it
        try:
            for piece in streamer:
                if not started:
                    piece = piece.lstrip()
                    started = bool(piece)
                if piece:
                    yield piece
        finally:
            stop_event.set() if worker.is_alive() else None
            worker.join()
        if error:
            raise error[0]
        seconds = time.perf_counter() - start
        if stats is not None:
            n = streamer.new_tokens
            stats.update(prompt_tokens=prompt_len, new_tokens=n, seconds=seconds,
                         tokens_per_s=n / seconds if seconds > 0 else 0.0)

    def chat(self, messages: Sequence[Message], images: Sequence[Any] | None = None, **kwargs: Any) -> str:
        return "".join(self.stream(messages, images, **kwargs))

    def answer(self, question: str, images: Sequence[Any] | None = None, **kwargs: Any) -> str:
        """One question about zero or more images; greedy by default."""
        kwargs.setdefault("max_new_tokens", 64)
        return self.chat([{"role": "user", "content": question}], images, **kwargs).strip()

    def answer_batch(self, questions: Sequence[str], images: Sequence[Sequence[Any] | None],
                     max_new_tokens: int = 64) -> list[str]:
        """Greedy answers for many (question, images) pairs in one left-padded batch."""
        max_new_tokens = check_chat_inputs(max_new_tokens, 0.0, 1.0)[0]
        convs = [[{"role": "user", "content": q}] for q in questions]
        batch = self.prepare(convs, [list(i) if i else None for i in images])
        out = generate_tokens(self.bundle, batch, max_new_tokens, fast_decode=self.fast_decode)
        return [s.strip() for s in self.processor.decode(out, skip_special_tokens=True)]
