import time

import pytest
from helpers_tokenizer import corpus
from transformers import AutoTokenizer

from janusflow_core.processing.tokenizer import (
    BOS_TOKEN,
    EOS_TOKEN,
    EXTRA_SPECIAL_TOKENS,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    train_bpe_tokenizer,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    start = time.perf_counter()
    tok = train_bpe_tokenizer(corpus(), 400, out)
    return tok, out, time.perf_counter() - start


def test_trains_fast_and_saves_loadable_files(trained):
    tok, out, seconds = trained
    assert seconds < 2.0
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= {p.name for p in out.iterdir()}
    loaded = AutoTokenizer.from_pretrained(out)
    assert loaded.get_vocab() == tok.get_vocab()
    assert len(tok) <= 400


def test_special_tokens(trained):
    tok, _, _ = trained
    assert tok.bos_token == BOS_TOKEN and tok.eos_token == EOS_TOKEN and tok.pad_token == PAD_TOKEN
    vocab = tok.get_vocab()
    assert len({vocab[t] for t in SPECIAL_TOKENS}) == len(SPECIAL_TOKENS)


def test_encode_prepends_bos(trained):
    tok, _, _ = trained
    assert tok.encode("User: hi")[0] == tok.bos_token_id


@pytest.mark.parametrize("tag", EXTRA_SPECIAL_TOKENS + [EOS_TOKEN])
def test_tags_are_single_tokens_even_when_glued(trained, tag):
    tok, _, _ = trained
    ids = tok.encode(f"Assistant:{tag}cat", add_special_tokens=False)
    assert tok.convert_tokens_to_ids(tag) in ids
    assert tok.decode(ids) == f"Assistant:{tag}cat"
    assert ids.count(tok.convert_tokens_to_ids(tag)) == 1


def test_round_trip_skips_special_tokens_cleanly(trained):
    tok, _, _ = trained
    text = "User: <image_placeholder>\nWhat is in this picture?\n\nAssistant: Two cats.<｜end▁of▁sentence｜>"
    ids = tok.encode(text)
    assert tok.decode(ids, skip_special_tokens=True) == "User: \nWhat is in this picture?\n\nAssistant: Two cats."
    plain = "  spaces,  unicode é ü 漢字 and\ttabs\n"
    assert tok.decode(tok.encode(plain), skip_special_tokens=True) == plain


def test_too_small_vocab_raises():
    with pytest.raises(ValueError, match="at least 263"):
        train_bpe_tokenizer(["a"], 100)
