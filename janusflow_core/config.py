"""Configuration of a JanusFlow model: frozen dataclasses, named presets, and one adapter for the
official ``config.json``.

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

# SigLIP towers known by name (the official code keeps the same table). Other towers can be given
# explicitly, e.g. the parity fixtures' tiny ones (``fixture_meta.json: siglip_table_entry``).
SIGLIP_TABLE: dict[str, dict[str, Any]] = {
    "siglip_large_patch16_384": {"image_size": 384, "patch_size": 16, "width": 1024, "layers": 24,
                                 "heads": 16, "mlp_ratio": 4},
    "siglip_large_patch16_256": {"image_size": 256, "patch_size": 16, "width": 1024, "layers": 24,
                                 "heads": 16, "mlp_ratio": 4},
    "siglip_so400m_patch14_384": {"image_size": 384, "patch_size": 14, "width": 1152, "layers": 27,
                                  "heads": 16, "mlp_ratio": 3.7362},
}

# Extra top-level key under which our own checkpoints store what the official config does not carry.
EXTRA_KEY = "janusflow_core"


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

    # -- derived sizes ---------------------------------------------------------------------------
    @property
    def gen_grid(self) -> int:
        e = self.gen_enc
        return (self.gen_latent_size + 2 * e.padding - e.kernel_size) // e.stride + 1

    @property
    def num_gen_tokens(self) -> int:
        return self.gen_grid * self.gen_grid

    @property
    def num_und_tokens(self) -> int:
        return self.siglip.num_tokens

    @property
    def latent_channels(self) -> int:
        return self.gen_enc.input_channels

    def validate(self) -> None:
        """Raise ValueError naming the field when sizes do not fit together."""
        d = self.llm.hidden_size
        problems = []
        if d % self.llm.num_attention_heads:
            problems.append(f"llm.hidden_size {d} is not divisible by num_attention_heads "
                            f"{self.llm.num_attention_heads}")
        if self.llm.num_attention_heads % self.llm.num_key_value_heads:
            problems.append("llm.num_attention_heads must be a multiple of num_key_value_heads")
        if self.siglip.width % self.siglip.heads:
            problems.append(f"siglip.width {self.siglip.width} is not divisible by heads {self.siglip.heads}")
        if self.siglip.image_size % self.siglip.patch_size:
            problems.append(f"siglip.image_size {self.siglip.image_size} is not divisible by patch_size "
                            f"{self.siglip.patch_size}")
        if self.gen_enc.hidden_size != d:
            problems.append(f"gen_enc.hidden_size {self.gen_enc.hidden_size} must equal llm.hidden_size {d}")
        if self.gen_dec.hidden_size != d:
            problems.append(f"gen_dec.hidden_size {self.gen_dec.hidden_size} must equal llm.hidden_size {d}")
        if self.gen_dec.out_channels != self.gen_enc.input_channels:
            problems.append(f"gen_dec.out_channels {self.gen_dec.out_channels} must equal "
                            f"gen_enc.input_channels {self.gen_enc.input_channels}")
        if len(self.gen_enc.block_out_channels) != 1 or len(self.gen_dec.block_out_channels) != 1:
            problems.append("gen_enc/gen_dec.block_out_channels must hold exactly one width (shallow U-ViT)")
        if self.gen_grid < 1:
            problems.append(f"gen_latent_size {self.gen_latent_size} is too small for kernel_size "
                            f"{self.gen_enc.kernel_size}")
        e = self.gen_enc
        if (self.gen_latent_size + 2 * e.padding - e.kernel_size) % e.stride:
            problems.append(f"gen_latent_size {self.gen_latent_size} does not tile with kernel_size "
                            f"{e.kernel_size}, stride {e.stride}, padding {e.padding}")
        if self.gen_grid * self.gen_dec.patch_size ** self.gen_dec.upsamples != self.gen_latent_size:
            problems.append(f"gen_dec: grid {self.gen_grid} x patch_size {self.gen_dec.patch_size}^upsamples "
                            f"{self.gen_dec.upsamples} does not give back gen_latent_size {self.gen_latent_size}")
        if problems:
            raise ValueError("invalid JanusFlow config: " + "; ".join(problems))

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
        name = und.get("model_name", "siglip_large_patch16_384")
        entry = siglip_entry or extra.get("siglip") or SIGLIP_TABLE.get(name)
        if entry is None:
            raise ValueError(f"unknown SigLIP model_name {name!r}: known are {sorted(SIGLIP_TABLE)}; "
                             "pass its dimensions (image_size, patch_size, width, layers, heads, mlp_ratio)")
        siglip = SigLIPConfig(
            model_name=name, image_size=und.get("image_size", entry["image_size"]),
            patch_size=entry["patch_size"], width=entry["width"], layers=entry["layers"],
            heads=entry["heads"], mlp_ratio=entry.get("mlp_ratio", 4.0),
            select_layer=und.get("select_layer", -1),
        )
        gen_enc = GenEncoderConfig(**_pick(GenEncoderConfig, enc))
        gen_dec = GenDecoderConfig(**_pick(GenDecoderConfig, dec))
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
                                      "params": _as_params(self.gen_enc)},
            "vision_gen_dec_config": {"cls": "ShallowUViTDecoder", "model_type": "vision_gen_dec",
                                      "params": _as_params(self.gen_dec)},
            EXTRA_KEY: {
                "siglip": {"image_size": s.image_size, "patch_size": s.patch_size, "width": s.width,
                           "layers": s.layers, "heads": s.heads, "mlp_ratio": s.mlp_ratio},
                "gen_latent_size": self.gen_latent_size, "time_scale": self.time_scale,
            },
        }

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


def _pick(klass: type, params: dict[str, Any]) -> dict[str, Any]:
    """Keep the fields the dataclass knows (official typos like ``elementwize_affine`` are ignored)."""
    names = {f.name for f in dataclasses.fields(klass)}
    out = {k: v for k, v in params.items() if k in names}
    if "block_out_channels" in out:
        out["block_out_channels"] = tuple(out["block_out_channels"])
    return out


def _as_params(c: Any) -> dict[str, Any]:
    d = dataclasses.asdict(c)
    d["block_out_channels"] = list(d["block_out_channels"])
    return d


def janusflow_1_3b() -> JanusFlowConfig:
    """The published deepseek-ai/JanusFlow-1.3B."""
    return JanusFlowConfig(
        llm=LLMConfig(vocab_size=102400, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                      num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=16384),
        siglip=SigLIPConfig(model_name="siglip_large_patch16_384", **SIGLIP_TABLE["siglip_large_patch16_384"]),
        gen_enc=GenEncoderConfig(),
        gen_dec=GenDecoderConfig(),
        gen_latent_size=48,
    )


def tiny(vocab_size: int = 512, hidden: int = 64, latent: int = 8, image_size: int = 32) -> JanusFlowConfig:
    """A few-hundred-kB model for tests: every path of the real one at toy widths."""
    return JanusFlowConfig(
        llm=LLMConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=512),
        siglip=SigLIPConfig(model_name="siglip_tiny", image_size=image_size, patch_size=8, width=48,
                            layers=2, heads=4),
        gen_enc=GenEncoderConfig(block_out_channels=(32,), hidden_size=hidden),
        gen_dec=GenDecoderConfig(in_channels=32, block_out_channels=(32,), hidden_size=hidden),
        gen_latent_size=latent,
    )


PRESETS = {"janusflow-1.3b": janusflow_1_3b, "tiny": tiny}
