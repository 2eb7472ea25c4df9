"""JanusFlow's processor: chat text + images -> model inputs (SPEC 4.1-4.3, 5.1).

The processor never touches the model. It renders the ``deepseek_old`` template, tokenizes, replaces
every ``<image_placeholder>`` id by ``[image_start, N x image, image_end]``, preprocesses the images and
left-pads a batch. For text-to-image it builds the classifier-free-guidance rows.

The id-level functions (`expand_image_tokens`, `batchify`, `cfg_rows` on ids) work without a tokenizer,
so they can be checked against the official parity fixtures, which give raw ids.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .chat import DEFAULT_SYSTEM_PROMPT, SFT_FORMAT, render_chat, render_generation_prompt
from .image import ImageInput, ImageProcessor, ImageProcessorConfig, read_settings_file

if TYPE_CHECKING:
    from ..config import JanusFlowConfig

logger = logging.getLogger(__name__)

PROCESSOR_CONFIG_NAME = "processor_config.json"
PAD_TOKEN = "<｜▁pad▁｜>"


# --------------------------------------------------------------------------------------------------
# Configuration and special tokens

# Files from which transformers can build a tokenizer without converting a slow one.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def load_tokenizer(folder: str | os.PathLike) -> Any:
    """``AutoTokenizer`` on ``folder``, after checking that it holds a tokenizer at all: without one
    transformers blames a missing sentencepiece/tiktoken install, which is not the problem."""
    from transformers import AutoTokenizer

    path = Path(folder)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"no tokenizer in {path}: expected tokenizer.json (or {', '.join(TOKENIZER_FILES[1:])})"
                                " beside tokenizer_config.json; copy it from the model's original folder")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # ValueError covers bad JSON
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"the tokenizer in {path} could not be read: {first}") from exc


@dataclass(frozen=True)
class ProcessorConfig:
    """``processor_config.json`` (official keys). Defaults are the official processor's defaults."""

    image_tag: str = "<image_placeholder>"
    image_start_tag: str = "<image_beg>"
    image_end_tag: str = "<end_of_image>"
    image_gen_tag: str = "<｜begin▁of▁generation｜>"
    num_image_tokens: int = 576
    sft_format: str = SFT_FORMAT
    add_special_token: bool = False
    ignore_id: int = -100
    mask_prompt: bool = True
    # The official processor takes the system text as a constructor argument; a checkpoint trained with
    # another one (the shapes model: none) names it here. Absent from the file = the official text.
    system_prompt: str = DEFAULT_SYSTEM_PROMPT

    def __post_init__(self) -> None:
        _check_sft_format(self.sft_format)
        if not isinstance(self.system_prompt, str):
            raise TypeError(f"system_prompt must be a str, got {type(self.system_prompt).__name__}")
        if self.add_special_token:
            raise ValueError(
                "add_special_token=true is not supported: JanusFlow replaces each placeholder by "
                "[image_start, N x image, image_end] with add_special_token=false (SPEC 4.3)"
            )
        if self.num_image_tokens < 1:
            raise ValueError(f"num_image_tokens must be >= 1, got {self.num_image_tokens}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProcessorConfig:
        """Unknown keys (``processor_class``, ...) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> ProcessorConfig:
        return read_settings_file(Path(folder) / PROCESSOR_CONFIG_NAME, cls.from_dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["system_prompt"] == DEFAULT_SYSTEM_PROMPT:
            del d["system_prompt"]  # the official files do not carry it
        return {**d, "processor_class": "VLChatProcessor"}


def _check_sft_format(sft_format: str) -> None:
    if sft_format != SFT_FORMAT:
        hint = (
            " ('deepseek' in the current official code is the Janus-Pro <|User|> template, not the "
            "User/Assistant one JanusFlow was trained with)"
            if sft_format == "deepseek"
            else ""
        )
        raise ValueError(f"sft_format {sft_format!r} is not supported; the only allowed value is {SFT_FORMAT!r}{hint}")


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids the processor inserts, plus the tag strings they come from."""

    bos: int
    eos: int
    pad: int
    image: int  # the placeholder id; also the id of the N expanded image positions
    image_start: int
    image_end: int
    gen_tag: int
    image_tag: str = ProcessorConfig.image_tag
    image_start_tag: str = ProcessorConfig.image_start_tag
    image_end_tag: str = ProcessorConfig.image_end_tag
    image_gen_tag: str = ProcessorConfig.image_gen_tag

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, config: ProcessorConfig | None = None) -> SpecialTokens:
        """Read the ids from ``tokenizer``, first registering any tag missing from its vocabulary as a
        new special token in the official order (placeholder, generation tag, start tag, end tag).
        Pad is ``<｜▁pad▁｜>`` if the vocabulary has it, else EOS (SPEC 4.2)."""
        from tokenizers import AddedToken

        config = config or ProcessorConfig()
        for tag in (config.image_tag, config.image_gen_tag, config.image_start_tag, config.image_end_tag):
            if tag not in tokenizer.get_vocab():
                new_id = len(tokenizer)
                tokenizer.add_tokens([AddedToken(tag, special=True)], special_tokens=True)
                logger.info("registered missing tag %s as a new special token (id %d)", tag, new_id)
        if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer must define bos and eos tokens")
        vocab = tokenizer.get_vocab()
        return cls(
            bos=tokenizer.bos_token_id,
            eos=tokenizer.eos_token_id,
            pad=vocab.get(PAD_TOKEN, tokenizer.eos_token_id),
            image=vocab[config.image_tag],
            image_start=vocab[config.image_start_tag],
            image_end=vocab[config.image_end_tag],
            gen_tag=vocab[config.image_gen_tag],
            image_tag=config.image_tag,
            image_start_tag=config.image_start_tag,
            image_end_tag=config.image_end_tag,
            image_gen_tag=config.image_gen_tag,
        )


# --------------------------------------------------------------------------------------------------
# Id-level functions (no tokenizer needed)


def expand_image_tokens(
    ids: torch.Tensor | Sequence[int], special: SpecialTokens, num_image_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each placeholder id by ``[image_start, N x image, image_end]`` (SPEC 4.3).

    Returns ``(ids (T',), images_seq_mask (T',))``; the mask is True on the start tag and on the N image
    positions, the N + 1 positions that receive image embeddings (the end tag keeps its own embedding).
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.ndim != 1:
        raise ValueError(f"expand_image_tokens takes one sequence of shape (T,), got {tuple(ids.shape)}")
    block = torch.tensor([special.image_start] + [special.image] * num_image_tokens + [special.image_end])
    pieces, start = [], 0
    for pos in (ids == special.image).nonzero().flatten().tolist():
        pieces += [ids[start:pos], block]
        start = pos + 1
    pieces.append(ids[start:])
    out = torch.cat(pieces)  # (T + k * (N + 1),)
    return out, (out == special.image) | (out == special.image_start)


@dataclass
class BatchedInputs:
    """A left-padded batch for the understanding path."""

    input_ids: torch.Tensor  # (B, T) long, left-padded with the pad id
    attention_mask: torch.Tensor  # (B, T) long, 1 = real token
    images_seq_mask: torch.Tensor  # (B, T) bool, positions that receive image embeddings
    images_emb_mask: torch.Tensor  # (B, n_max, N + 1) bool, real images
    pixel_values: torch.Tensor  # (B, n_max, 3, S, S), zero for missing images
    texts: list[str] = field(default_factory=list)  # rendered prompts, when built from text

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> BatchedInputs:
        """Move every tensor to ``device``; ``dtype`` applies to ``pixel_values`` only."""
        return replace(
            self,
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            images_seq_mask=self.images_seq_mask.to(device),
            images_emb_mask=self.images_emb_mask.to(device),
            pixel_values=self.pixel_values.to(device=device, dtype=dtype),
        )


def batchify(items: Sequence[Mapping[str, Any]], pad_id: int, num_image_tokens: int) -> BatchedInputs:
    """Left-pad ``[{input_ids (T_i,), images_seq_mask (T_i,), pixel_values (n_i, 3, S, S)}, ...]``.

    Checks that each sequence has exactly n_i * (N + 1) image positions.
    """
    if len(items) == 0:
        raise ValueError("batchify needs at least one item")
    n_per_item = [int(it["pixel_values"].shape[0]) for it in items]
    sizes = {tuple(it["pixel_values"].shape[1:]) for it in items}
    if len(sizes) != 1 or len(next(iter(sizes))) != 3:
        raise ValueError(f"pixel_values must all have shape (n_i, 3, S, S) with the same S, got {sizes}")
    image_shape = next(iter(sizes))
    b, t, n_max = len(items), max(len(it["input_ids"]) for it in items), max(1, max(n_per_item))

    input_ids = torch.full((b, t), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(b, t, dtype=torch.long)
    images_seq_mask = torch.zeros(b, t, dtype=torch.bool)
    images_emb_mask = torch.zeros(b, n_max, num_image_tokens + 1, dtype=torch.bool)
    pixel_values = torch.zeros(b, n_max, *image_shape, dtype=items[0]["pixel_values"].dtype)
    for i, (it, n) in enumerate(zip(items, n_per_item)):
        ids, seq_mask = torch.as_tensor(it["input_ids"]), torch.as_tensor(it["images_seq_mask"])
        if int(seq_mask.sum()) != n * (num_image_tokens + 1):
            raise ValueError(
                f"item {i}: {int(seq_mask.sum())} image positions in the sequence but {n} images x "
                f"{num_image_tokens + 1} positions expected; placeholder count and image count differ"
            )
        length = len(ids)
        input_ids[i, t - length :] = ids
        attention_mask[i, t - length :] = 1
        images_seq_mask[i, t - length :] = seq_mask
        images_emb_mask[i, :n] = True
        pixel_values[i, :n] = it["pixel_values"]
    texts = [it["text"] for it in items if "text" in it]
    return BatchedInputs(input_ids, attention_mask, images_seq_mask, images_emb_mask, pixel_values, texts)


def cfg_rows(
    prompts: torch.Tensor | Sequence[torch.Tensor], num_images: int, pad_id: int,
    negative: torch.Tensor | Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier-free-guidance rows for text-to-image (SPEC 5.1).

    ``prompts``: one id sequence (P,) or a list of them. Each prompt is repeated ``num_images`` times;
    the R = K * num_images conditional rows come first, then their unconditional copies in the same
    order. Rows are left-padded to the longest prompt (mask 0 on pads). An unconditional row keeps only
    its first real token (BOS) and has every other position set to pad with mask 0, so BOS stays at the
    same column as in its conditional row. With ``negative`` (a negative prompt's ids, encoded like a
    prompt), every unconditional row is that sequence instead, and all rows are left-padded to the longest
    of the prompts and it. Returns ``(tokens (2R, P), attention_mask (2R, P))``; the model appends the t
    embedding and the N image positions (mask 1) itself.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if isinstance(prompts, torch.Tensor):
        prompts = [prompts]
    seqs = [torch.as_tensor(p, dtype=torch.long) for p in prompts for _ in range(num_images)]
    neg = None if negative is None else torch.as_tensor(negative, dtype=torch.long)
    if any(s.ndim != 1 or len(s) == 0 for s in seqs + ([neg] if neg is not None else [])):
        raise ValueError("each prompt must be a non-empty 1-D id sequence")
    r, p = len(seqs), max(len(s) for s in seqs + ([neg] if neg is not None else []))
    tokens = torch.full((2 * r, p), pad_id, dtype=torch.long)
    mask = torch.zeros(2 * r, p, dtype=torch.long)
    for i, s in enumerate(seqs):
        first = p - len(s)
        tokens[i, first:] = s
        mask[i, first:] = 1
        if neg is None:
            tokens[r + i, first] = s[0]
            mask[r + i, first] = 1
        else:
            tokens[r + i, p - len(neg):] = neg
            mask[r + i, p - len(neg):] = 1
    return tokens, mask


# --------------------------------------------------------------------------------------------------
# The processor


class JanusFlowProcessor:
    """Tokenizer + chat template + image processor. ``tokenizer`` and ``image_processor`` may be None
    for the id-level functions."""

    def __init__(
        self,
        tokenizer: Any | None,
        image_processor: ImageProcessor | None,
        num_image_tokens: int,
        special_tokens: SpecialTokens,
        sft_format: str = SFT_FORMAT,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        ignore_id: int = -100,
        mask_prompt: bool = True,
    ) -> None:
        _check_sft_format(sft_format)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.num_image_tokens = num_image_tokens
        self.special_tokens = special_tokens
        self.sft_format = sft_format
        self.system_prompt = system_prompt
        self.ignore_id = ignore_id
        self.mask_prompt = mask_prompt

    # ---- construction / persistence

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **kwargs: Any) -> JanusFlowProcessor:
        """Tokenizer (``AutoTokenizer``), ``processor_config.json`` and ``preprocessor_config.json``."""
        config = ProcessorConfig.from_pretrained(folder)
        tokenizer = load_tokenizer(folder)
        return cls(
            tokenizer,
            ImageProcessor.from_pretrained(folder),
            config.num_image_tokens,
            SpecialTokens.from_tokenizer(tokenizer, config),
            sft_format=config.sft_format,
            ignore_id=config.ignore_id,
            mask_prompt=config.mask_prompt,
            **{"system_prompt": config.system_prompt, **kwargs},
        )

    @classmethod
    def for_model(cls, config: JanusFlowConfig, tokenizer: Any | None, *,
                  special_tokens: SpecialTokens | None = None, image_settings: Mapping[str, Any] | None = None,
                  system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> JanusFlowProcessor:
        """The processor a model of ``config`` reads: images at its understanding encoder's side, as many
        image tokens as that encoder makes. ``special_tokens`` default to the tokenizer's (official
        names); ``image_settings`` are further :class:`ImageProcessorConfig` fields (mean, std ...)."""
        if special_tokens is None:
            if tokenizer is None:
                raise ValueError("for_model needs a tokenizer or explicit special_tokens")
            special_tokens = SpecialTokens.from_tokenizer(tokenizer)
        image_config = ImageProcessorConfig(image_size=config.siglip.image_size, **(image_settings or {}))
        return cls(tokenizer, ImageProcessor(image_config), config.num_und_tokens, special_tokens,
                   system_prompt=system_prompt)

    @property
    def config(self) -> ProcessorConfig:
        st = self.special_tokens
        return ProcessorConfig(
            image_tag=st.image_tag,
            image_start_tag=st.image_start_tag,
            image_end_tag=st.image_end_tag,
            image_gen_tag=st.image_gen_tag,
            num_image_tokens=self.num_image_tokens,
            sft_format=self.sft_format,
            ignore_id=self.ignore_id,
            mask_prompt=self.mask_prompt,
            system_prompt=self.system_prompt,
        )

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write the tokenizer, ``processor_config.json`` and ``preprocessor_config.json``."""
        if self.tokenizer is None or self.image_processor is None:
            raise ValueError("save_pretrained needs both a tokenizer and an image processor")
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path)
        config_text = json.dumps(self.config.to_dict(), indent=2, ensure_ascii=False) + "\n"
        (path / PROCESSOR_CONFIG_NAME).write_text(config_text, encoding="utf-8")
        self.image_processor.save_pretrained(path)

    # ---- id level

    def expand_image_tokens(self, ids: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return expand_image_tokens(ids, self.special_tokens, self.num_image_tokens)

    def batchify(self, items: Sequence[Mapping[str, Any]]) -> BatchedInputs:
        return batchify(items, self.special_tokens.pad, self.num_image_tokens)

    # ---- understanding

    def _require(self, what: str) -> Any:
        obj = getattr(self, what)
        if obj is None:
            raise ValueError(f"this processor was built without a {what.replace('_', ' ')}")
        return obj

    def _encode(self, text: str) -> list[int]:
        ids = list(self._require("tokenizer").encode(text))
        if not ids or ids[0] != self.special_tokens.bos:  # a tokenizer without a BOS post-processor
            ids = [self.special_tokens.bos] + ids
        return ids

    def _place_images(
        self, messages: Sequence[Mapping[str, Any]], images: Sequence[ImageInput] | None
    ) -> tuple[list[dict[str, Any]], list[ImageInput]]:
        """Messages with placeholders inserted where needed, and the images in placeholder order."""
        tag = self.special_tokens.image_tag
        msgs = [dict(m) for m in messages]
        per_message = [list(m.pop("images", None) or []) for m in msgs]
        if images is not None and not isinstance(images, (list, tuple)):
            images = [images]
        if images and any(per_message):
            raise ValueError("give images either per message ('images' key) or through `images`, not both")
        for m, imgs in zip(msgs, per_message):
            content = m.get("content", "")
            if imgs and tag not in content:
                m["content"] = f"{tag}\n" * len(imgs) + content
            elif imgs and content.count(tag) != len(imgs):
                raise ValueError(f"a message has {content.count(tag)} {tag} placeholders but {len(imgs)} images")
        if any(per_message):
            return msgs, [im for imgs in per_message for im in imgs]
        images = list(images or [])
        if images and not any(tag in m.get("content", "") for m in msgs):
            first_user = next((m for m in msgs if m.get("role") == "user"), None)
            if first_user is None:
                raise ValueError("images were given but the conversation has no user message to attach them to")
            first_user["content"] = f"{tag}\n" * len(images) + first_user.get("content", "")
        return msgs, images

    def encode_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        images: Sequence[ImageInput] | None = None,
        system_prompt: str | None = None,
        max_length: int | None = None,
    ) -> dict[str, Any]:
        """One conversation -> ``{input_ids (T,), images_seq_mask (T,), pixel_values (n, 3, S, S), text}``.

        Images come either in ``images`` (matched to the ``<image_placeholder>`` tags in order; if the text
        has none, ``<image_placeholder>\\n`` per image is put at the start of the first user message, as in
        the official demo) or per message as ``{"role": "user", "content": ..., "images": [...]}``
        (placeholders put at the start of that message unless it already has one per image). The
        generation prompt ``Assistant:`` is appended. ``max_length`` bounds the expanded length.
        """
        msgs, imgs = self._place_images(messages, images)
        text = render_chat(msgs, self.system_prompt if system_prompt is None else system_prompt)
        ids = self._encode(text)
        n_tags = ids.count(self.special_tokens.image)
        if n_tags != len(imgs):
            raise ValueError(
                f"the prompt has {n_tags} {self.special_tokens.image_tag} placeholders but {len(imgs)} images "
                "were given; use one placeholder per image"
            )
        input_ids, images_seq_mask = self.expand_image_tokens(ids)
        if max_length is not None and len(input_ids) > max_length:
            raise ValueError(f"the prompt is {len(input_ids)} tokens with its images; the limit is {max_length}")
        if imgs:
            pixel_values = self._require("image_processor")(imgs)
        else:
            s = self.image_processor.image_size if self.image_processor is not None else 1
            pixel_values = torch.zeros(0, 3, s, s)
        return {"input_ids": input_ids, "images_seq_mask": images_seq_mask, "pixel_values": pixel_values, "text": text}

    def __call__(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]],
        images: Sequence[Sequence[ImageInput] | None] | None = None,
        system_prompt: str | None = None,
        max_length: int | None = None,
    ) -> BatchedInputs:
        """Several conversations (or one) -> a left-padded batch. ``images[i]`` goes with conversation i."""
        if len(conversations) > 0 and isinstance(conversations[0], Mapping):
            conversations = [conversations]  # a single conversation
            images = [images] if images is not None else None
        if images is not None and len(images) != len(conversations):
            raise ValueError(f"{len(images)} image lists for {len(conversations)} conversations")
        items = [
            self.encode_chat(conv, images[i] if images is not None else None, system_prompt, max_length)
            for i, conv in enumerate(conversations)
        ]
        return self.batchify(items)

    # ---- generation

    def encode_generation_prompt(self, prompt: str, max_length: int | None = None) -> torch.Tensor:
        """Text-to-image prompt ids (P,), exactly as the official code feeds them (SPEC 5.1).

        The official code encodes ``User: {prompt}\\n\\nAssistant:`` + a tag (with BOS) and then drops the
        last position after embedding. We do the same (append the generation tag, encode, drop the last
        token), so P and every id equal the official ones; the tag itself never reaches the model.
        ``max_length`` is the longest allowed P: the model context minus the 1 + N positions of t and the
        image tokens.
        """
        ids = self._encode(render_generation_prompt(prompt) + self.special_tokens.image_gen_tag)
        if ids[-1] != self.special_tokens.gen_tag:
            raise ValueError(f"the tokenizer did not encode {self.special_tokens.image_gen_tag} as one token")
        ids = ids[:-1]
        if max_length is not None and len(ids) > max_length:
            raise ValueError(
                f"the prompt is {len(ids)} tokens; the limit is {max_length} "
                "(model context minus 1 + N positions for t and the image tokens)"
            )
        return torch.tensor(ids, dtype=torch.long)

    def cfg_rows(
        self,
        prompt_ids: str | torch.Tensor | Sequence[str] | Sequence[torch.Tensor],
        num_images: int = 1,
        max_length: int | None = None,
        negative: str | torch.Tensor | Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CFG rows ``(tokens (2R, P), attention_mask (2R, P))`` for one prompt or a list (see `cfg_rows`).
        Strings are encoded with `encode_generation_prompt`; so is a ``negative`` prompt given as text,
        whose rows replace the unconditional ones."""
        single = isinstance(prompt_ids, (str, torch.Tensor)) or (
            isinstance(prompt_ids, Sequence) and len(prompt_ids) > 0 and isinstance(prompt_ids[0], int)
        )
        prompts = [prompt_ids] if single else list(prompt_ids)
        seqs = []
        for p in prompts:
            seq = self.encode_generation_prompt(p) if isinstance(p, str) else torch.as_tensor(p, dtype=torch.long)
            if max_length is not None and len(seq) > max_length:
                raise ValueError(
                    f"the prompt is {len(seq)} tokens; the limit is {max_length} "
                    "(model context minus 1 + N positions for t and the image tokens)"
                )
            seqs.append(seq)
        if isinstance(negative, str):
            negative = self.encode_generation_prompt(negative, max_length=max_length)
        return cfg_rows(seqs, num_images, self.special_tokens.pad, negative=negative)

    # ---- decoding

    def decode(self, ids: torch.Tensor | Sequence[int], skip_special_tokens: bool = True) -> str | list[str]:
        """Token ids -> text; a 2-D tensor gives one string per row."""
        tok = self._require("tokenizer")
        if isinstance(ids, torch.Tensor) and ids.ndim == 2:
            return tok.batch_decode(ids.tolist(), skip_special_tokens=skip_special_tokens)
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return tok.decode(ids, skip_special_tokens=skip_special_tokens)
