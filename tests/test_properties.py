"""Property-based checks of the user-facing core entry points (hypothesis).

One property throughout: whatever the input, the result is a value or one clear message: an InputError /
ValueError with a message (Python), or exit status 2 with exactly one ``error:`` line on stderr (CLI);
never a traceback, another exception type or a hang. CLI input that is refused never loads the model.
``REFUSED`` counts the bad inputs each entry point refused (printed at the end of the module with -s).
"""

from __future__ import annotations

import io
import json
import math
import signal
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from janusflow_core import checkpoint, cli, limits
from janusflow_core.pipelines import check_chat_inputs, check_generation_inputs
from janusflow_core.processing import ImageProcessor, ImageProcessorConfig, load_image

REFUSED: Counter[str] = Counter()
TRIED: Counter[str] = Counter()
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MODES = ("1", "L", "P", "PA", "RGB", "RGBA", "LA", "I", "F", "I;16", "CMYK", "YCbCr", "HSV", "RGBX")
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM")


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print("\nproperty tests, inputs tried / refused with one clear message:")
    for name in sorted(TRIED):
        print(f"  {name}: {TRIED[name]} tried, {REFUSED[name]} refused")


@pytest.fixture(autouse=True)
def no_hang():
    """A hang becomes a failure (SIGALRM) instead of stalling the suite."""
    def hung(signum, frame):
        raise TimeoutError("an entry point took more than 60 s on one input")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(300)  # a whole test (all its examples)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


class Loaded(BaseException):
    """Raised instead of loading a model: the CLI accepted every value. Not an Exception, so the CLI's
    own error handling cannot swallow it."""


@pytest.fixture
def no_model(monkeypatch):
    def fake_load(*args, **kwargs):
        raise Loaded

    monkeypatch.setattr(checkpoint, "load_pretrained", fake_load)


def _python_outcome(entry: str, func, *args, **kwargs):
    """func's value, or None after a refusal with a message; anything else fails the property."""
    TRIED[entry] += 1
    try:
        return func(*args, **kwargs)
    except ValueError as exc:  # InputError, CheckpointError, ... are ValueErrors
        assert str(exc).strip() and "\n" not in str(exc).strip(), repr(exc)
        REFUSED[entry] += 1
        return None


def _cli_outcome(entry: str, capsys, argv: list[str]) -> bool:
    """True when the CLI accepted the input (it went on to load the model), False after a clean refusal."""
    TRIED[entry] += 1
    try:
        code = cli.main(argv)
    except Loaded:
        capsys.readouterr()
        return True
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (argv, code, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (argv, err)
    REFUSED[entry] += 1
    return False


# -- image loading and preprocessing ---------------------------------------------------------------------

PROC = ImageProcessor(ImageProcessorConfig(image_size=16))


def _encoded(mode: str, size: tuple[int, int], fmt: str, seed: int) -> bytes | None:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    try:
        im = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
        im.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):  # this format cannot store this mode
        return None
    return buf.getvalue()


@FAST
@given(data=st.binary(max_size=4096))
def test_random_bytes_as_an_image(data):
    out = _python_outcome("python: load_image(random bytes)", PROC, [data])
    if out is not None:
        assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()


@FAST
@given(mode=st.sampled_from(MODES), w=st.integers(1, 70), h=st.integers(1, 70), fmt=st.sampled_from(FORMATS),
       seed=st.integers(0, 2**16), cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)),
                                                                      max_size=4))
def test_damaged_image_files(mode, w, h, fmt, seed, cut, flips):
    data = _encoded(mode, (w, h), fmt, seed)
    if data is None:
        return
    damaged = bytearray(data[: max(1, int(len(data) * cut))] if cut < 0.95 else data)
    for where, value in flips:
        if damaged:
            damaged[int(where * (len(damaged) - 1))] = value
    out = _python_outcome("python: load_image(truncated/corrupted file)", PROC, [bytes(damaged)])
    if out is not None:
        assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()


@FAST
@given(mode=st.sampled_from(MODES), w=st.integers(1, 300), h=st.integers(1, 300))
def test_every_mode_and_size_preprocesses(mode, w, h):
    im = Image.new(mode, (w, h))
    out = PROC([im])
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()
    assert load_image(im).mode == "RGB"


@FAST
@given(shape=st.lists(st.integers(0, 6), min_size=0, max_size=4),
       dtype=st.sampled_from([np.uint8, np.float32, np.int64, np.bool_]))
def test_random_arrays(shape, dtype):
    arr = np.zeros(shape, dtype=dtype)
    out = _python_outcome("python: load_image(random array)", load_image, arr)
    if out is not None:
        assert out.mode == "RGB"


@FAST
@given(text=st.text(max_size=300))
def test_random_chat_text_through_the_processor(tiny_bundle, text):
    proc = tiny_bundle.processor
    out = _python_outcome("python: processor(random text)", proc, [[{"role": "user", "content": text}]],
                          max_length=tiny_bundle.config.llm.max_position_embeddings - 1)
    if out is not None:
        assert out.input_ids.shape[0] == 1 and out.attention_mask.sum() == out.input_ids.shape[1]
    ids = _python_outcome("python: processor(random text)", proc.encode_generation_prompt, text, max_length=200)
    if ids is not None:
        assert len(ids) <= 200


# -- the pipelines' argument checks -----------------------------------------------------------------------

ANY_VALUE = st.one_of(st.integers(0, 9), st.floats(0, 2), st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                      st.floats(allow_nan=True),
                      st.text(max_size=12), st.lists(st.integers(), max_size=2))


def _in(value, bounds, integer) -> bool:
    """The expected verdict, computed independently of limits.check_number."""
    if isinstance(value, bool) or value is None or isinstance(value, list):
        return False
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return not math.isnan(x) and bounds[0] <= x <= bounds[1] and (not integer or x == int(x))


@FAST
@given(prompt=st.one_of(st.text(max_size=20), st.none()), steps=ANY_VALUE, cfg=ANY_VALUE, n=ANY_VALUE,
       sampler=st.one_of(st.sampled_from(["euler", "heun"]), st.text(max_size=6)), seed=ANY_VALUE)
def test_generation_checks(prompt, steps, cfg, n, sampler, seed):
    ok = _python_outcome("python: check_generation_inputs", check_generation_inputs, prompt, steps, cfg, n, sampler,
                         seed)
    expected = (isinstance(prompt, str) and bool(prompt.strip()) and (steps is None or _in(steps, limits.STEPS, True))
                and (cfg is None or _in(cfg, limits.GUIDANCE, False)) and _in(n, limits.IMAGES, True)
                and sampler in ("euler", "heun") and _in(seed, limits.SEED, True))
    assert (ok is not None) == expected


@FAST
@given(max_new=ANY_VALUE, temperature=ANY_VALUE, top_p=ANY_VALUE, seed=ANY_VALUE)
def test_chat_checks(max_new, temperature, top_p, seed):
    ok = _python_outcome("python: check_chat_inputs", check_chat_inputs, max_new, temperature, top_p, seed)
    expected = (_in(max_new, limits.MAX_NEW_TOKENS, True) and _in(temperature, limits.TEMPERATURE, False)
                and _in(top_p, limits.TOP_P, False) and (seed is None or _in(seed, limits.SEED, True)))
    assert (ok is not None) == expected


# -- the CLI: refused before loading, in one line ------------------------------------------------------

FLAG_TEXT = st.one_of(st.integers(0, 9).map(str), st.sampled_from(["0.5", "1.0", "2", " 3 ", "8e0"]),
                      st.integers(-(2**66), 2**66).map(str), st.floats(allow_nan=True).map(repr),
                      st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                              max_size=10))


@FAST
@given(steps=FLAG_TEXT, cfg=FLAG_TEXT, seed=FLAG_TEXT, n=FLAG_TEXT)
def test_cli_generate_flags(tmp_path, capsys, no_model, steps, cfg, seed, n):
    argv = ["generate", "--prompt", "a red circle", "--out", str(tmp_path / "o"), f"--steps={steps}", f"--cfg={cfg}",
            f"--seed={seed}", f"--num-images={n}"]
    accepted = _cli_outcome("cli: generate flags", capsys, argv)
    assert accepted == (_in(steps, limits.STEPS, True) and _in(cfg, limits.GUIDANCE, False)
                        and _in(seed, limits.SEED, True) and _in(n, limits.IMAGES, True))


@FAST
@given(max_new=FLAG_TEXT, temperature=FLAG_TEXT, top_p=FLAG_TEXT, seed=FLAG_TEXT,
       question=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                        max_size=30))
def test_cli_chat_flags(capsys, no_model, max_new, temperature, top_p, seed, question):
    argv = ["chat", f"--question={question}", f"--max-new-tokens={max_new}", f"--temperature={temperature}",
            f"--top-p={top_p}", f"--seed={seed}"]
    accepted = _cli_outcome("cli: chat flags", capsys, argv)
    assert accepted == (bool(question.strip()) and _in(max_new, limits.MAX_NEW_TOKENS, True)
                        and _in(temperature, limits.TEMPERATURE, False) and _in(top_p, limits.TOP_P, False)
                        and _in(seed, limits.SEED, True))


JSON_VALUE = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(),
                                    st.text(max_size=8)),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3), max_leaves=6)
PROMPT_ROW = st.fixed_dictionaries(
    {"prompt": st.one_of(st.sampled_from(["a red circle", "", "  "]), JSON_VALUE),
     "seed": st.one_of(st.integers(0, 9), st.integers(-5, 2**32), JSON_VALUE)},
    optional={"steps": st.one_of(st.integers(-3, 200), JSON_VALUE), "cfg": st.one_of(st.floats(-1, 12), JSON_VALUE),
              "num_images": st.one_of(st.integers(-1, 10), JSON_VALUE), "sampler": st.sampled_from(["euler", "x"]),
              "extra": JSON_VALUE})
VALID_ROW = st.fixed_dictionaries({"prompt": st.just("a red circle"), "seed": st.integers(0, 9)},
                                  optional={"steps": st.integers(1, 100), "num_images": st.integers(1, 8)})
JSONL_LINE = st.one_of(VALID_ROW.map(json.dumps), PROMPT_ROW.map(json.dumps), JSON_VALUE.map(json.dumps),
                       st.text(max_size=40))


@FAST
@given(lines=st.lists(JSONL_LINE, max_size=5))
def test_cli_prompts_file_rows(tmp_path, capsys, no_model, lines):
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    argv = ["generate", "--prompts-file", str(f), "--out", str(tmp_path / "o")]
    _cli_outcome("cli: --prompts-file rows", capsys, argv)


@FAST
@given(lines=st.lists(st.one_of(st.fixed_dictionaries({"question": st.one_of(st.text(max_size=20), JSON_VALUE)},
                                                      optional={"image": st.one_of(st.none(), st.text(max_size=8),
                                                                                   JSON_VALUE)}).map(json.dumps),
                                JSONL_LINE), max_size=4))
def test_cli_questions_file_rows(tmp_path, capsys, no_model, lines):
    f = tmp_path / "q.jsonl"
    f.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    _cli_outcome("cli: --questions-file rows", capsys, ["chat", "--questions-file", str(f)])


@FAST
@given(data=st.binary(max_size=3000), which=st.sampled_from(["prompts", "questions", "image"]))
def test_cli_random_bytes_as_files(tmp_path, capsys, no_model, data, which):
    f = tmp_path / "input"
    f.write_bytes(data)
    argv = {"prompts": ["generate", "--prompts-file", str(f), "--out", str(tmp_path / "o")],
            "questions": ["chat", "--questions-file", str(f)],
            "image": ["chat", "--image", str(f), "--question", "What color is the circle?"]}[which]
    _cli_outcome(f"cli: random bytes as {which} file", capsys, argv)
