import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_tokenizer import make_bare_tokenizer, make_tokenizer
from PIL import Image

from janusflow_core.limits import InputError
from janusflow_core.processing import (
    DEFAULT_SYSTEM_PROMPT,
    BatchedInputs,
    ImageProcessor,
    ImageProcessorConfig,
    JanusFlowProcessor,
    ProcessorConfig,
    SpecialTokens,
    load_image,
    render_chat,
    render_generation_prompt,
)
from janusflow_core.processing import image as image_module

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official-tiny-a"
needs_fixture = pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"parity fixture folder missing: {FIXTURE}")

CLIP = {"image_mean": (0.48145466, 0.4578275, 0.40821073), "image_std": (0.26862954, 0.26130258, 0.27577711)}
EOS = "<｜end▁of▁sentence｜>"


@pytest.fixture(scope="module")
def fixture_tensors():
    from safetensors.torch import load_file

    meta = json.loads((FIXTURE / "fixture_meta.json").read_text())
    return load_file(FIXTURE / "inputs.safetensors"), load_file(FIXTURE / "expected.safetensors"), meta


def fixture_processor(meta) -> JanusFlowProcessor:
    ids = meta["token_ids"]
    special = SpecialTokens(
        bos=ids["bos"],
        eos=ids["eos"],
        pad=ids["pad"],
        image=ids["image"],
        image_start=ids["image_start"],
        image_end=ids["image_end"],
        gen_tag=ids["gen_tag"],
    )
    image_processor = ImageProcessor(ImageProcessorConfig(image_size=32))
    return JanusFlowProcessor(None, image_processor, meta["num_image_tokens"], special)


# ------------------------------------------------------------------------------------------------ images


@needs_fixture
@pytest.mark.parametrize(
    "name, png, settings",
    [
        ("imgproc_50x30_mean05_std05", "image_50x30.png", {}),
        ("imgproc_50x30_clip_mean_std", "image_50x30.png", CLIP),
        ("imgproc_50x30_no_normalize", "image_50x30.png", {"do_normalize": False}),
        ("imgproc_second_clip_mean_std", "image_30x50.png", CLIP),
        ("imgproc_second_mean05_std05", "image_30x50.png", {}),
    ],
)
def test_image_processor_matches_official(fixture_tensors, name, png, settings):
    _, expected, _ = fixture_tensors
    out = ImageProcessor(ImageProcessorConfig(image_size=32, **settings))([FIXTURE / png])
    assert out.dtype == torch.float32 and out.shape == (1, 3, 32, 32)
    torch.testing.assert_close(out, expected[name], atol=1e-4, rtol=1e-4)
    assert torch.equal(out, expected[name])  # bit-identical in practice


@needs_fixture
def test_numpy_input_and_batch_match_official_pixel_values(fixture_tensors):
    inputs, _, _ = fixture_tensors
    arrays = [inputs["imgproc_image_50x30_uint8_hwc"].numpy(), inputs["imgproc_image_second_uint8_hwc"].numpy()]
    out = ImageProcessor(ImageProcessorConfig(image_size=32))(arrays)
    assert torch.equal(out, inputs["und_pixel_values"][:, 0])


def test_background_and_centering():
    cfg = ImageProcessorConfig(image_size=32, do_normalize=False, **CLIP)
    assert cfg.background_color == (122, 116, 104)
    out = ImageProcessor(cfg)([Image.new("RGB", (40, 20), (255, 0, 0))])[0]  # -> 32 x 16 at rows 8..23
    assert torch.all(out[0, 8:24] == 1.0) and torch.all(out[1, 8:24] == 0.0)
    background = torch.tensor([122, 116, 104]).double().view(3, 1, 1) / 255
    assert torch.equal(out[:, :8], background.float().expand(3, 8, 32))
    assert torch.equal(out[:, 24:], background.float().expand(3, 8, 32))
    portrait = ImageProcessor(cfg)([Image.new("RGB", (20, 40), (255, 0, 0))])[0]
    assert torch.all(portrait[0, :, 8:24] == 1.0)
    assert torch.equal(portrait[:, :, :8], background.float().expand(3, 32, 8))


def test_min_size_applies_to_thin_images():
    proc = ImageProcessor(ImageProcessorConfig(image_size=64, do_normalize=False))
    out = proc([Image.new("RGB", (1000, 2), "white")])
    rows_with_image = (out[0, 0] == 1.0).all(dim=1).nonzero().flatten()
    assert len(rows_with_image) == 14 and rows_with_image[0] == (64 - 14) // 2


def test_config_from_pretrained_tolerates_unknown_keys_and_round_trips(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_size": 32, "image_mean": [0.1, 0.2, 0.3], "background_color": [1, 2, 3], "foo": 1})
    )
    cfg = ImageProcessorConfig.from_pretrained(tmp_path)
    assert cfg.image_mean == (0.1, 0.2, 0.3) and cfg.image_std == (0.5, 0.5, 0.5) and cfg.min_size == 14
    assert cfg.background_color == (25, 51, 76)  # derived from the mean, file value ignored
    assert ImageProcessorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        ImageProcessorConfig.from_pretrained(tmp_path / "missing")


def test_rgba_is_composited_over_white():
    im = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    im.putpixel((1, 0), (10, 20, 30, 255))
    out = load_image(im)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (10, 20, 30)


def test_la_p_and_palette_transparency():
    la = Image.new("LA", (1, 1), (0, 0))
    assert load_image(la).getpixel((0, 0)) == (255, 255, 255)
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    p.putpixel((1, 0), 1)
    assert load_image(p).getpixel((1, 0)) == (200, 100, 50)
    p.info["transparency"] = 0
    out = load_image(p)
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (200, 100, 50)
    buf = io.BytesIO()
    p.save(buf, format="PNG", transparency=0)
    assert load_image(buf.getvalue()).getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_and_grayscale():
    assert load_image(Image.new("CMYK", (1, 1), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(Image.new("L", (1, 1), 77)).getpixel((0, 0)) == (77, 77, 77)
    assert load_image(np.full((2, 3), 9, dtype=np.uint8)).size == (3, 2)


def test_16bit_and_float_are_scaled_not_clipped():
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    i16 = Image.fromarray(arr)  # uint16 -> "I;16"
    assert [load_image(i16).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    buf = io.BytesIO()
    i16.save(buf, format="PNG")  # Pillow may reopen this as "I" or "I;16"
    assert [load_image(buf.getvalue()).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))  # "F"
    assert [load_image(f).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    f_wide = Image.fromarray(np.array([[-10.0, 0.0, 10.0]], dtype=np.float32))  # "F"
    assert [load_image(f_wide).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_non_image_raises_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"not a readable image; supported formats: PNG, JPEG"):
        load_image(b"definitely not an image")
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.png.*supported formats"):
        load_image(bad)
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.zeros((2, 2, 3), dtype=np.float32))


def test_tiny_and_huge_images(monkeypatch, tmp_path):
    proc = ImageProcessor(ImageProcessorConfig(image_size=32))
    assert proc([Image.new("RGB", (1, 1), "red")]).shape == (1, 3, 32, 32)
    pillow_limit = Image.MAX_IMAGE_PIXELS
    big = tmp_path / "blank.png"
    Image.new("1", (8000, 8000), 1).save(big)  # 64 MP, above limits.MAX_IMAGE_PIXELS (50 MP)
    with pytest.raises(InputError, match=r"blank\.png' is 8000 x 8000 = 64\.0 megapixels; the limit is 50 megapixels"):
        proc([big])
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # the global Pillow setting is left as it was
    buf = io.BytesIO()
    Image.new("RGB", (10, 11), "blue").save(buf, format="PNG")
    monkeypatch.setattr(image_module, "MAX_IMAGE_PIXELS", 110)  # the bound is inclusive
    assert proc([buf.getvalue()]).shape == (1, 3, 32, 32)
    monkeypatch.setattr(image_module, "MAX_IMAGE_PIXELS", 109)
    with pytest.raises(InputError, match="10 x 11"):
        load_image(buf.getvalue())
    with pytest.raises(InputError, match="10 x 11"):  # images given as objects obey the same limit
        load_image(Image.new("RGB", (10, 11)))


def test_truncated_and_corrupt_files_are_clear_errors(tmp_path):
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, format="PNG")
    data = buf.getvalue()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.png' could not be decoded as an image .*truncated or corrupt"):
        load_image(cut)
    with pytest.raises(InputError, match="is a folder, not an image file"):
        load_image(tmp_path)


# ------------------------------------------------------------------------------------------------ chat


def test_single_turn_template():
    text = render_chat([{"role": "user", "content": "<image_placeholder>\nWhat is this?"}])
    assert text == f"{DEFAULT_SYSTEM_PROMPT}\n\nUser: <image_placeholder>\nWhat is this?\n\nAssistant:"
    assert DEFAULT_SYSTEM_PROMPT.startswith("You are a helpful language and vision assistant. You are able")


def test_multi_turn_template_and_stripping():
    msgs = [
        {"role": "user", "content": "  Hi  "},
        {"role": "assistant", "content": "Hello.\n"},
        {"role": "user", "content": "Bye"},
    ]
    assert render_chat(msgs, system_prompt="S") == f"S\n\nUser: Hi\n\nAssistant: Hello.{EOS}User: Bye\n\nAssistant:"
    closed = render_chat(msgs[:2], system_prompt="S", add_generation_prompt=False)
    assert closed == f"S\n\nUser: Hi\n\nAssistant: Hello.{EOS}"


def test_empty_system_and_empty_content():
    assert render_chat([{"role": "user", "content": "x"}], system_prompt="") == "User: x\n\nAssistant:"
    assert render_chat([{"role": "user", "content": "  "}], system_prompt="") == "User:Assistant:"
    assert render_generation_prompt("a red cat") == "User: a red cat\n\nAssistant:"


def test_roles_are_validated():
    with pytest.raises(ValueError, match="allowed roles are 'user' and 'assistant'"):
        render_chat([{"role": "system", "content": "x"}])
    with pytest.raises(ValueError, match="alternate"):
        render_chat([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(TypeError):
        render_chat({"role": "user", "content": "x"})


# ------------------------------------------------------------------------------------------------ ids


@needs_fixture
def test_expansion_and_left_padding_match_official(fixture_tensors):
    inputs, _, meta = fixture_tensors
    proc = fixture_processor(meta)
    items = []
    for k in range(2):
        ids, seq_mask = proc.expand_image_tokens(inputs[f"und_prompt{k}_ids_before_expansion"])
        items.append({"input_ids": ids, "images_seq_mask": seq_mask, "pixel_values": inputs["und_pixel_values"][k]})
    batch = proc.batchify(items)
    assert torch.equal(batch.input_ids, inputs["und_input_ids"])
    assert torch.equal(batch.attention_mask, inputs["und_attention_mask"])
    assert torch.equal(batch.images_seq_mask, inputs["und_images_seq_mask"])
    assert torch.equal(batch.images_emb_mask, inputs["und_images_emb_mask"])
    assert torch.equal(batch.pixel_values, inputs["und_pixel_values"])


@needs_fixture
def test_cfg_rows_match_official(fixture_tensors):
    inputs, _, meta = fixture_tensors
    proc = fixture_processor(meta)
    prompt = inputs["gen_prompt_ids"][:-1]  # the official code drops the appended tag
    p = len(prompt)
    tokens, mask = proc.cfg_rows(prompt, num_images=2)
    assert torch.equal(tokens, inputs["gen_tokens"][:, :p])
    assert torch.equal(mask, inputs["gen_attention_mask"][:, :p].long())
    with pytest.raises(ValueError, match="the limit is 5"):
        proc.cfg_rows(prompt, num_images=2, max_length=5)


def test_cfg_rows_for_several_prompts_left_pad():
    special = SpecialTokens(bos=1, eos=2, pad=0, image=3, image_start=4, image_end=5, gen_tag=6)
    proc = JanusFlowProcessor(None, None, 4, special)
    tokens, mask = proc.cfg_rows([torch.tensor([1, 7, 8, 9]), [1, 7]], num_images=1)
    assert tokens.tolist() == [[1, 7, 8, 9], [0, 0, 1, 7], [1, 0, 0, 0], [0, 0, 1, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 1, 0]]


def test_image_position_count_is_checked():
    special = SpecialTokens(bos=1, eos=2, pad=0, image=3, image_start=4, image_end=5, gen_tag=6)
    proc = JanusFlowProcessor(None, None, 4, special)
    ids, seq_mask = proc.expand_image_tokens([1, 3, 9, 3])
    assert ids.tolist() == [1, 4, 3, 3, 3, 3, 5, 9, 4, 3, 3, 3, 3, 5]
    assert seq_mask.sum() == 10 and not seq_mask[6] and seq_mask[1]
    with pytest.raises(ValueError, match="2 images x 5 positions expected"):
        item = {"input_ids": ids[:9], "images_seq_mask": seq_mask[:9], "pixel_values": torch.zeros(2, 3, 8, 8)}
        proc.batchify([item])


def test_batch_without_images_and_to():
    special = SpecialTokens(bos=1, eos=2, pad=0, image=3, image_start=4, image_end=5, gen_tag=6)
    proc = JanusFlowProcessor(None, None, 4, special)
    item = {"input_ids": torch.tensor([1, 9]), "images_seq_mask": torch.zeros(2, dtype=torch.bool)}
    batch = proc.batchify([{**item, "pixel_values": torch.zeros(0, 3, 8, 8)}])
    assert batch.pixel_values.shape == (1, 1, 3, 8, 8) and not batch.images_emb_mask.any()
    moved = batch.to("cpu", torch.bfloat16)
    assert isinstance(moved, BatchedInputs) and moved.pixel_values.dtype == torch.bfloat16
    assert moved.input_ids.dtype == torch.long and batch.pixel_values.dtype == torch.float32


# ------------------------------------------------------------------------------------------------ with a tokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    make_tokenizer(folder)
    (folder / "processor_config.json").write_text(
        json.dumps({"num_image_tokens": 4, "sft_format": "deepseek_old", "image_start_tag": "<image_beg>", "x": 1})
    )
    ImageProcessor(ImageProcessorConfig(image_size=16)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def processor(checkpoint):
    return JanusFlowProcessor.from_pretrained(checkpoint)


def test_from_pretrained_reads_ids(processor):
    tok, st = processor.tokenizer, processor.special_tokens
    assert st.pad == tok.convert_tokens_to_ids("<｜▁pad▁｜>") != st.eos
    assert st.image == tok.convert_tokens_to_ids("<image_placeholder>")
    assert st.gen_tag == tok.convert_tokens_to_ids("<｜begin▁of▁generation｜>")
    assert processor.num_image_tokens == 4 and processor.image_processor.image_size == 16


def test_encode_chat_inserts_placeholder_like_the_demo(processor):
    img = Image.new("RGB", (20, 10), "blue")
    out = processor.encode_chat([{"role": "user", "content": "What is this?"}], images=[img])
    assert out["text"] == f"{DEFAULT_SYSTEM_PROMPT}\n\nUser: <image_placeholder>\nWhat is this?\n\nAssistant:"
    st = processor.special_tokens
    ids = out["input_ids"]
    assert ids[0] == st.bos and (ids == st.image).sum() == 4 and (ids == st.image_start).sum() == 1
    assert out["images_seq_mask"].sum() == 5 and out["pixel_values"].shape == (1, 3, 16, 16)
    assert processor.decode(ids).endswith("What is this?\n\nAssistant:")


def test_per_message_images_and_batching(processor):
    img = Image.new("RGB", (10, 10), "red")
    conv_a = [
        {"role": "user", "content": "First?", "images": [img]},
        {"role": "assistant", "content": "A square."},
        {"role": "user", "content": "And these?", "images": [img, img]},
    ]
    conv_b = [{"role": "user", "content": "Hi"}]
    batch = processor([conv_a, conv_b])
    assert "User: <image_placeholder>\n<image_placeholder>\nAnd these?" in batch.texts[0]
    assert batch.pixel_values.shape == (2, 3, 3, 16, 16)
    assert batch.images_emb_mask[:, :, 0].tolist() == [[True, True, True], [False, False, False]]
    assert batch.images_seq_mask[0].sum() == 15 and batch.images_seq_mask[1].sum() == 0
    assert batch.attention_mask[1, 0] == 0 and batch.input_ids[1, 0] == processor.special_tokens.pad
    assert batch.attention_mask[1, -1] == 1 and batch.attention_mask[0].all()


def test_placeholder_count_mismatch_raises(processor):
    img = Image.new("RGB", (10, 10))
    msgs = [{"role": "user", "content": "<image_placeholder> and <image_placeholder>"}]
    with pytest.raises(ValueError, match="2 <image_placeholder> placeholders but 1 images"):
        processor.encode_chat(msgs, images=[img])
    with pytest.raises(ValueError, match="not both"):
        processor.encode_chat([{"role": "user", "content": "x", "images": [img]}], images=[img])
    with pytest.raises(ValueError, match="the limit is 10"):
        processor.encode_chat([{"role": "user", "content": "x"}], images=[img], max_length=10)


def test_generation_prompt_drops_the_appended_tag(processor):
    ids = processor.encode_generation_prompt("a red house")
    tok = processor.tokenizer
    assert ids.tolist() == tok.encode("User: a red house\n\nAssistant:")
    tokens, mask = processor.cfg_rows(["a red house", "sky"], num_images=2)
    assert tokens.shape == (8, len(ids)) and torch.equal(tokens[0], ids) and torch.equal(tokens[1], ids)
    assert mask[4:].sum() == 4 and (tokens[4:][mask[4:] == 1] == processor.special_tokens.bos).all()
    with pytest.raises(ValueError, match="the limit is 3"):
        processor.encode_generation_prompt("a red house", max_length=3)


def test_save_pretrained_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    again = JanusFlowProcessor.from_pretrained(tmp_path)
    assert again.special_tokens == processor.special_tokens
    assert again.config == processor.config and again.image_processor.config == processor.image_processor.config
    assert json.loads((tmp_path / "processor_config.json").read_text())["sft_format"] == "deepseek_old"


def test_missing_tags_are_registered_in_official_order(tmp_path):
    tok = make_bare_tokenizer(tmp_path)
    n = len(tok)
    special = SpecialTokens.from_tokenizer(tok)
    assert (special.image, special.gen_tag, special.image_start, special.image_end) == (n, n + 1, n + 2, n + 3)
    assert special.pad == special.eos
    assert tok.encode("x<image_beg>y", add_special_tokens=False).count(special.image_start) == 1


def test_bos_is_added_when_the_tokenizer_does_not():
    class NoBos:
        def encode(self, text):
            return [ord(c) for c in text]

    special = SpecialTokens(bos=1, eos=2, pad=0, image=3, image_start=4, image_end=5, gen_tag=6)
    proc = JanusFlowProcessor(NoBos(), None, 4, special)
    assert proc._encode("ab") == [1, 97, 98]


def test_only_deepseek_old_is_allowed():
    with pytest.raises(ValueError, match="only allowed value is 'deepseek_old'.*Janus-Pro"):
        ProcessorConfig(sft_format="deepseek")
    with pytest.raises(ValueError, match="add_special_token"):
        ProcessorConfig(add_special_token=True)


def test_system_prompt_is_read_from_the_config_and_round_trips(processor, tmp_path):
    # the official files carry no system_prompt: the official text applies and is not written back
    assert processor.system_prompt == DEFAULT_SYSTEM_PROMPT
    processor.save_pretrained(tmp_path / "official")
    assert "system_prompt" not in json.loads((tmp_path / "official" / "processor_config.json").read_text())
    # a checkpoint trained without a system text says so, and chat rendering follows it
    processor.system_prompt = ""
    try:
        processor.save_pretrained(tmp_path / "none")
    finally:
        processor.system_prompt = DEFAULT_SYSTEM_PROMPT
    again = JanusFlowProcessor.from_pretrained(tmp_path / "none")
    assert again.system_prompt == ""
    assert again.encode_chat([{"role": "user", "content": "hi"}])["text"] == "User: hi\n\nAssistant:"
    # an explicit argument still wins
    assert JanusFlowProcessor.from_pretrained(tmp_path / "none", system_prompt="S").system_prompt == "S"
