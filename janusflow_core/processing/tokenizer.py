"""Train a small byte-level BPE tokenizer with JanusFlow's special tokens.

For tests and from-scratch experiments where the published DeepSeek-LLM tokenizer is not at hand.
The result behaves like the real one where the processor depends on it: ``encode`` prepends BOS, every
special token / image tag is one token even when glued to text, and decoding with
``skip_special_tokens=True`` gives the original text back (byte-level, no stray spaces).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

BOS_TOKEN = "<｜begin▁of▁sentence｜>"
EOS_TOKEN = "<｜end▁of▁sentence｜>"
PAD_TOKEN = "<｜▁pad▁｜>"
IMAGE_TAG = "<image_placeholder>"
IMAGE_START_TAG = "<image_beg>"
IMAGE_END_TAG = "<end_of_image>"
IMAGE_GEN_TAG = "<｜begin▁of▁generation｜>"

SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, IMAGE_TAG, IMAGE_START_TAG, IMAGE_END_TAG, IMAGE_GEN_TAG)
EXTRA_SPECIAL_TOKENS = [IMAGE_TAG, IMAGE_START_TAG, IMAGE_END_TAG, IMAGE_GEN_TAG]


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike | None = None
) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on ``texts``; save to ``out_dir`` (loadable with ``AutoTokenizer``) if given.

    Special tokens take ids 0..6 in the order of ``SPECIAL_TOKENS``; ``vocab_size`` includes them and
    the 256 byte symbols.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast  # heavy: import on use

    min_size = len(SPECIAL_TOKENS) + 256
    if vocab_size < min_size:
        raise ValueError(f"vocab_size must be at least {min_size} (7 special tokens + 256 bytes), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B:1",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=EXTRA_SPECIAL_TOKENS,
        clean_up_tokenization_spaces=False,
        padding_side="left",
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        hf_tok.save_pretrained(out)
        _write_compat_files(out)
        return AutoTokenizer.from_pretrained(out)
    return hf_tok


def _write_compat_files(out: Path) -> None:
    """Make the folder loadable by older transformers too (the official code ran 4.38): a class name
    both versions know and the ``special_tokens_map.json`` that transformers 5 no longer writes."""
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    special = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "additional_special_tokens": EXTRA_SPECIAL_TOKENS,
    }
    special_text = json.dumps(special, indent=2, ensure_ascii=False) + "\n"
    (out / "special_tokens_map.json").write_text(special_text, encoding="utf-8")
