"""Configuration of a JanusFlow model: frozen dataclasses and one adapter for the official
``config.json`` (the named presets are in :mod:`janusflow_core.presets`).

Every width, grid size and token count of the model is derived from these fields; the model code holds
no literal sizes. The official config hard-codes some widths in its model class and omits the SigLIP
dimensions (they live in a table keyed by ``model_name``); :func:`from_official_dict` fills both in.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# SigLIP towers known by name: the official table (its so400m "384" entry says 336), plus a 256 px
# large tower of ours. Other towers can be given explicitly, e.g. the parity fixtures' tiny ones
# (``fixture_meta.json: siglip_table_entry``). The image side the tower is built for is NOT taken from
# here: it is ``vision_und_enc_config.params.image_size`` (official default 336 when absent).
SIGLIP_TABLE: dict[str, dict[str, Any]] = {
    "siglip_large_patch16_384": {"image_size": 384, "patch_size": 16, "width": 1024, "layers": 24,
                                 "heads": 16, "mlp_ratio": 4},
    "siglip_large_patch16_256": {"image_size": 256, "patch_size": 16, "width": 1024, "layers": 24,
                                 "heads": 16, "mlp_ratio": 4},
    "siglip_so400m_patch14_384": {"image_size": 336, "patch_size": 14, "width": 1152, "layers": 27,
                                  "heads": 16, "mlp_ratio": 3.7362},
    "siglip_so400m_patch14_224": {"image_size": 224, "patch_size": 14, "width": 1152, "layers": 27,
                                  "heads": 16, "mlp_ratio": 3.7362},
}
# Constructor defaults of the official CLIPVisionTower for keys a config.json leaves out.
OFFICIAL_UND_DEFAULTS: dict[str, Any] = {"model_name": "siglip_large_patch16_384", "image_size": 336,
                                         "select_layer": -2}

# Extra top-level key under which our own checkpoints store what the official config does not carry.
EXTRA_KEY = "janusflow_core"

# Where the generation geometry lives in the official config.json (named in error messages).
ENC_KEY = "vision_gen_enc_config.params"
DEC_KEY = "vision_gen_dec_config.params"
UND_KEY = "vision_und_enc_config.params"

# Sizes the official ShallowUViT classes hard-code instead of reading config.json: the ConvNeXt FFN
# factor of both mid blocks and the pixel-shuffle factor of every decoder stage. Our checkpoints may
# change them only under the ``janusflow_core`` section, which the official code does not read.
OFFICIAL_FFN_FACTOR = 4
OFFICIAL_UNPATCH_FACTOR = 2

# Constructor defaults of the official classes: what a config.json that leaves a key out gets there.
# (padding None means kernel_size - stride, the official rule.)
OFFICIAL_ENC_DEFAULTS: dict[str, Any] = {
    "input_channels": 3, "kernel_size": 7, "stride": 4, "padding": None, "block_out_channels": (768,),
    "layers_in_middle": 2, "hidden_size": 2048, "norm_eps": 1e-6, "use_bias": True, "use_mid_block": True}
OFFICIAL_DEC_DEFAULTS: dict[str, Any] = {
    "in_channels": 768, "out_channels": 3, "block_out_channels": (768,), "upsamples": 2, "layers_in_middle": 2,
    "hidden_size": 2048, "norm_eps": 1e-6, "use_bias": True, "use_mid_block": True}


@dataclass(frozen=True)
class LLMConfig:
    """LLaMA-layout language model (DeepSeek-LLM)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0


@dataclass(frozen=True)
class SigLIPConfig:
    """timm-style SigLIP ViT used as the understanding encoder."""

    model_name: str
    image_size: int
    patch_size: int
    width: int
    layers: int
    heads: int
    mlp_ratio: float = 4.0
    select_layer: int = -1

    @property
    def depth(self) -> int:
        """Blocks built and run (official rule: layers + select_layer + 1 for select_layer <= 0)."""
        if self.select_layer <= 0:
            return self.layers + self.select_layer + 1
        return min(self.select_layer, self.layers)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def mlp_width(self) -> int:
        return int(self.width * self.mlp_ratio)


@dataclass(frozen=True)
class GenEncoderConfig:
    """ShallowUViTEncoder: time embedding, patchify conv and ConvNeXt blocks on VAE latents."""

    input_channels: int = 4
    kernel_size: int = 2
    stride: int = 2
    padding: int = 0
    block_out_channels: tuple[int, ...] = (768,)
    layers_in_middle: int = 2
    hidden_size: int = 2048
    norm_eps: float = 1e-6
    use_bias: bool = True
    use_mid_block: bool = True
    ffn_factor: int = 4


@dataclass(frozen=True)
class GenDecoderConfig:
    """ShallowUViTDecoder: skip concat, ConvNeXt blocks, unpatchify to a velocity."""

    in_channels: int = 768
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (768,)
    upsamples: int = 1
    layers_in_middle: int = 2
    hidden_size: int = 2048
    norm_eps: float = 1e-6
    use_bias: bool = True
    use_mid_block: bool = True
    ffn_factor: int = 4
    patch_size: int = 2  # pixel-shuffle factor of each unpatchify stage


@dataclass(frozen=True)
class JanusFlowConfig:
    llm: LLMConfig
    siglip: SigLIPConfig
    gen_enc: GenEncoderConfig
    gen_dec: GenDecoderConfig
    # Side of the square VAE latent that generation works on (48 = 384 px / SDXL-VAE's 8x for the
    # published model; the official demo generates at 384 px).
    gen_latent_size: int = 48
    # t in [0, 1) is multiplied by this before the time embedding (the official loop's convention).
    time_scale: float = 1000.0

    def __post_init__(self) -> None:
        self.validate()

    # -- derived sizes (the official modules' convolution arithmetic: output sides floor) --------
    @property
    def gen_grid(self) -> int:
        """Side of the generation encoder's output: Conv2d(kernel, stride, padding) on the latent."""
        return conv_out_side(self.gen_latent_size, self.gen_enc.kernel_size, self.gen_enc.stride,
                             self.gen_enc.padding)

    @property
    def num_gen_tokens(self) -> int:
        return self.gen_grid * self.gen_grid

    @property
    def num_und_tokens(self) -> int:
        return self.siglip.num_tokens

    @property
    def latent_channels(self) -> int:
        return self.gen_enc.input_channels

    @property
    def gen_enc_width(self) -> int:
        """Channels of the generation encoder's output (its ``in_conv`` width): the image-token width
        before the aligner and the skip tensor the decoder concatenates."""
        return self.gen_enc.block_out_channels[0]

    @property
    def gen_dec_out_side(self) -> int:
        """Side of the decoder's output: each pixel-shuffle stage multiplies the grid side."""
        return self.gen_grid * self.gen_dec.patch_size ** self.gen_dec.upsamples

    @property
    def gen_dec_out_channels(self) -> int:
        """The last stage maps to out_channels; with no stage the mid-block features come out."""
        d = self.gen_dec
        return d.out_channels if d.upsamples > 0 else d.in_channels + d.block_out_channels[-1]

    def validate(self) -> None:
        """Raise ValueError naming the field when sizes do not fit together.

        What is refused is what the official code cannot build or run: sizes it floors (an image side
        that is no multiple of the patch, a latent that a strided conv does not tile) are accepted and
        computed the same way. The velocity must have the latent's shape, since the sampler adds it to
        the latent (the official loop fails otherwise).
        """
        d = self.llm.hidden_size
        s, e, dec = self.siglip, self.gen_enc, self.gen_dec
        problems = []
        if d % self.llm.num_attention_heads:
            problems.append(f"llm.hidden_size {d} is not divisible by num_attention_heads "
                            f"{self.llm.num_attention_heads}")
        if self.llm.num_attention_heads % self.llm.num_key_value_heads:
            problems.append("llm.num_attention_heads must be a multiple of num_key_value_heads")
        if s.width % s.heads:
            problems.append(f"siglip.width {s.width} is not divisible by heads {s.heads}")
        if s.patch_size < 1 or s.image_size < s.patch_size:
            problems.append(f"siglip.image_size {s.image_size} ({UND_KEY}.image_size) must be at least the patch "
                            f"size {s.patch_size} (>= 1): the patch conv needs one whole patch; any larger side is "
                            "allowed, the grid is image_size // patch_size and the border pixels are dropped")
        if e.hidden_size != d:
            problems.append(f"gen_enc.hidden_size {e.hidden_size} must equal llm.hidden_size {d}")
        if dec.hidden_size != d:
            problems.append(f"gen_dec.hidden_size {dec.hidden_size} must equal llm.hidden_size {d}")
        if not e.block_out_channels or not dec.block_out_channels:
            problems.append(f"{ENC_KEY}.block_out_channels and {DEC_KEY}.block_out_channels must not be empty")
            raise ValueError("invalid JanusFlow config: " + "; ".join(problems))
        if e.use_mid_block and e.block_out_channels[-1] != e.block_out_channels[0]:
            problems.append(f"{ENC_KEY}.block_out_channels {list(e.block_out_channels)}: the mid block runs on the "
                            f"last width but in_conv makes the first; allowed: first == last")
        if dec.block_out_channels[-1] != self.gen_enc_width:
            problems.append(f"{DEC_KEY}.block_out_channels[-1] {dec.block_out_channels[-1]} must equal the "
                            f"encoder's output width {self.gen_enc_width} ({ENC_KEY}.block_out_channels[0]): the "
                            "decoder concatenates the encoder output as its skip tensor")
        if min(e.kernel_size, e.stride) < 1 or e.padding < 0:
            problems.append(f"{ENC_KEY}: kernel_size {e.kernel_size} and stride {e.stride} must be >= 1 and padding "
                            f"{e.padding} >= 0 (padding null means kernel_size - stride)")
        elif self.gen_grid < 1:
            problems.append(f"gen_latent_size {self.gen_latent_size} is too small for {ENC_KEY} kernel_size "
                            f"{e.kernel_size} with padding {e.padding}: allowed latent sides are >= "
                            f"{e.kernel_size - 2 * e.padding}")
        elif dec.patch_size < 1 or dec.upsamples < 0:
            problems.append(f"gen_dec: upsamples {dec.upsamples} must be >= 0 and patch_size {dec.patch_size} >= 1")
        else:
            if self.gen_dec_out_side != self.gen_latent_size:
                problems.append(self._round_trip_problem())
            if self.gen_dec_out_channels != e.input_channels:
                problems.append(f"the decoder returns {self.gen_dec_out_channels} channels ({DEC_KEY}.out_channels"
                                f", or in_channels + block_out_channels[-1] when upsamples is 0) but the latent has "
                                f"{e.input_channels} ({ENC_KEY}.input_channels): the velocity must have the "
                                "latent's shape; allowed: gen_dec.out_channels == gen_enc.input_channels")
        if problems:
            raise ValueError("invalid JanusFlow config: " + "; ".join(problems))

    def _round_trip_problem(self) -> str:
        e, dec, n = self.gen_enc, self.gen_dec, self.gen_latent_size
        f = dec.patch_size ** dec.upsamples
        ok = [m for m in range(1, 8 * max(n, 64) + 1)
              if conv_out_side(m, e.kernel_size, e.stride, e.padding) * f == m][:6]
        allowed = (f"allowed gen_latent_size values for this geometry: {', '.join(map(str, ok))}, ..." if ok else
                   "no latent side comes back from this geometry: the decoder's factor "
                   f"{dec.patch_size}**upsamples must match the encoder's stride {e.stride}")
        return (f"gen_latent_size {n} does not come back from the generation encoder/decoder: {ENC_KEY} "
                f"kernel_size {e.kernel_size}, stride {e.stride}, padding {e.padding} give a grid of "
                f"floor(({n} + 2*{e.padding} - {e.kernel_size}) / {e.stride}) + 1 = {self.gen_grid}, and "
                f"{DEC_KEY}.upsamples {dec.upsamples} pixel-shuffle x{dec.patch_size} stage(s) give back "
                f"{self.gen_dec_out_side}, not {n}, so the velocity would not have the latent's shape (the official "
                f"sampling loop fails the same way); {allowed} (the latent side is not in the official "
                f"config.json: it comes from {EXTRA_KEY}.gen_latent_size, the gen_latent_size argument of the "
                "loader, or else 48, the official demo's 384 px / 8)")

    # -- official config.json --------------------------------------------------------------------
    @classmethod
    def from_official_dict(cls, cfg: dict[str, Any], siglip_entry: dict[str, Any] | None = None,
                           gen_latent_size: int | None = None) -> JanusFlowConfig:
        """Read the official ``config.json`` layout (tolerating its typos and unused keys)."""
        try:
            lc = cfg["language_config"]
            und = cfg["vision_und_enc_config"]["params"]
            enc = cfg["vision_gen_enc_config"]["params"]
            dec = cfg["vision_gen_dec_config"]["params"]
        except KeyError as exc:
            raise ValueError(f"config.json lacks the official section {exc}; expected language_config, "
                             "vision_und_enc_config, vision_gen_enc_config, vision_gen_dec_config") from exc
        extra = cfg.get(EXTRA_KEY, {})
        llm = LLMConfig(
            vocab_size=lc["vocab_size"], hidden_size=lc["hidden_size"],
            intermediate_size=lc["intermediate_size"], num_hidden_layers=lc["num_hidden_layers"],
            num_attention_heads=lc["num_attention_heads"],
            num_key_value_heads=lc.get("num_key_value_heads", lc["num_attention_heads"]),
            max_position_embeddings=lc.get("max_position_embeddings", 2048),
            rms_norm_eps=lc.get("rms_norm_eps", 1e-6), rope_theta=lc.get("rope_theta", 10000.0),
        )
        name = und.get("model_name", OFFICIAL_UND_DEFAULTS["model_name"])
        entry = siglip_entry or extra.get("siglip") or SIGLIP_TABLE.get(name)
        if entry is None:
            raise ValueError(f"unknown SigLIP model_name {name!r}: known are {sorted(SIGLIP_TABLE)}; "
                             "pass its dimensions (image_size, patch_size, width, layers, heads, mlp_ratio)")
        siglip = SigLIPConfig(
            model_name=name,
            image_size=_square_side(und.get("image_size", OFFICIAL_UND_DEFAULTS["image_size"]),
                                    f"{UND_KEY}.image_size"),
            patch_size=entry["patch_size"], width=entry["width"], layers=entry["layers"],
            heads=entry["heads"], mlp_ratio=entry.get("mlp_ratio", 4.0),
            select_layer=und.get("select_layer", OFFICIAL_UND_DEFAULTS["select_layer"]),
        )
        gen_enc = GenEncoderConfig(**_official_params(enc, OFFICIAL_ENC_DEFAULTS, ENC_KEY),
                                   ffn_factor=extra.get("gen_enc_ffn_factor", OFFICIAL_FFN_FACTOR))
        gen_dec = GenDecoderConfig(**_official_params(dec, OFFICIAL_DEC_DEFAULTS, DEC_KEY),
                                   ffn_factor=extra.get("gen_dec_ffn_factor", OFFICIAL_FFN_FACTOR),
                                   patch_size=extra.get("gen_dec_patch_size", OFFICIAL_UNPATCH_FACTOR))
        latent = gen_latent_size or extra.get("gen_latent_size") or 48
        return cls(llm=llm, siglip=siglip, gen_enc=gen_enc, gen_dec=gen_dec, gen_latent_size=latent,
                   time_scale=extra.get("time_scale", 1000.0))

    def to_official_dict(self) -> dict[str, Any]:
        """The official layout, plus our extra section (SigLIP dims, latent size) the official code ignores."""
        llm = dataclasses.asdict(self.llm)
        llm.update(model_type="llama", torch_dtype="float32")
        s = self.siglip
        return {
            "architectures": ["MultiModalityCausalLM"],
            "model_type": "multi_modality",
            "torch_dtype": "float32",
            "language_config": llm,
            "vision_und_enc_config": {"cls": "CLIPVisionTower", "model_type": "vision_und_enc", "params": {
                "image_size": s.image_size, "model_name": s.model_name, "select_feature": "same",
                "select_layer": s.select_layer}},
            "vision_gen_enc_config": {"cls": "ShallowUViTEncoder", "model_type": "vision_gen_enc",
                                      "params": _as_params(self.gen_enc, OFFICIAL_ENC_DEFAULTS)},
            "vision_gen_dec_config": {"cls": "ShallowUViTDecoder", "model_type": "vision_gen_dec",
                                      "params": _as_params(self.gen_dec, OFFICIAL_DEC_DEFAULTS)},
            EXTRA_KEY: {
                "siglip": {"image_size": s.image_size, "patch_size": s.patch_size, "width": s.width,
                           "layers": s.layers, "heads": s.heads, "mlp_ratio": s.mlp_ratio},
                "gen_latent_size": self.gen_latent_size, "time_scale": self.time_scale,
                **self._unofficial_sizes(),
            },
        }

    def _unofficial_sizes(self) -> dict[str, int]:
        """Sizes the official classes hard-code, written only where ours differ from them."""
        sizes = {"gen_enc_ffn_factor": (self.gen_enc.ffn_factor, OFFICIAL_FFN_FACTOR),
                 "gen_dec_ffn_factor": (self.gen_dec.ffn_factor, OFFICIAL_FFN_FACTOR),
                 "gen_dec_patch_size": (self.gen_dec.patch_size, OFFICIAL_UNPATCH_FACTOR)}
        return {k: ours for k, (ours, official) in sizes.items() if ours != official}

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> JanusFlowConfig:
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"no config.json at {path}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object (the official JanusFlow config), "
                             f"got {type(data).__name__}")
        try:
            return cls.from_official_dict(data, **kwargs)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path} is not a JanusFlow config: {type(exc).__name__} {exc}") from exc


def conv_out_side(side: int, kernel: int, stride: int, padding: int) -> int:
    """Output side of a Conv2d (PyTorch arithmetic: the division floors, extra border is dropped)."""
    return (side + 2 * padding - kernel) // stride + 1


def _square_side(value: Any, key: str) -> int:
    """One int, or a pair of equal ints (Conv2d accepts both and builds the same module)."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} = {value!r}: allowed is one integer (or two equal ones); the official model "
                         "works on square images and square token grids")
    return value


def _official_params(params: dict[str, Any], defaults: dict[str, Any], section: str) -> dict[str, Any]:
    """The keys the official constructor reads, with its defaults for absent ones; any other key
    (``elementwize_affine``, ``num_extra_tensors``, ``dropout`` ...) is ignored, as there."""
    out = {k: params.get(k, v) for k, v in defaults.items()}
    out["block_out_channels"] = tuple(out["block_out_channels"])
    for k in ("kernel_size", "stride", "padding"):
        if k in out and out[k] is not None:
            out[k] = _square_side(out[k], f"{section}.{k}")
    if "padding" in out and out["padding"] is None:
        out["padding"] = out["kernel_size"] - out["stride"]  # the official rule for padding null
    return out


def _as_params(c: Any, official_keys: dict[str, Any]) -> dict[str, Any]:
    d = {k: v for k, v in dataclasses.asdict(c).items() if k in official_keys}
    d["block_out_channels"] = list(d["block_out_channels"])
    return d
