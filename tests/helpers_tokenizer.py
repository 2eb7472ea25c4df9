"""Tiny tokenizers for processor tests (trained in milliseconds on a synthetic corpus)."""

from __future__ import annotations

import random
from pathlib import Path

from janusflow_core.processing.tokenizer import BOS_TOKEN, EOS_TOKEN, train_bpe_tokenizer

WORDS = (
    "the a cat dog sits on mat image picture photo of red blue green big small house tree sky user "
    "assistant describe what is in this there are two three people standing near river under bright sun"
).split()


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))).capitalize() + "." for _ in range(n)]


def make_tokenizer(out_dir: Path, vocab_size: int = 400):
    """Byte-level BPE with all JanusFlow special tokens, saved in ``out_dir``."""
    return train_bpe_tokenizer(corpus(), vocab_size, out_dir)


def make_bare_tokenizer(out_dir: Path):
    """A tokenizer with only BOS and EOS: no pad token and none of the image tags."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=[BOS_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", special_tokens=[(BOS_TOKEN, tok.token_to_id(BOS_TOKEN))]
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN).save_pretrained(out_dir)
    return AutoTokenizer.from_pretrained(out_dir)
