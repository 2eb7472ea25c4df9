"""Load and save JanusFlow checkpoints in the official key layout.

``load_pretrained`` builds the model on the meta device (so a 2 B-parameter model never sits twice in
memory), checks every tensor name and shape of the safetensors file(s) against it (strict: any
missing, unexpected or wrong-shape key is an error naming the key), then assigns the tensors, cast
once to the requested dtype. The VAE, tokenizer and processor settings come from their own files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import limits
from .bundle import DEFAULT_MODEL, DEFAULT_SAMPLING, JanusFlowBundle, SamplingSettings, default_sampling
from .config import JanusFlowConfig
from .hub import resolve_folder
from .modeling import JanusFlowModel
from .modeling.llm import reset_rope_buffers

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

    from .processing import JanusFlowProcessor
    from .vae import VAE

log = logging.getLogger(__name__)

DEFAULT_VAE = "stabilityai/sdxl-vae"
SAMPLING_FILE = "sampling.json"

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


class CheckpointError(ValueError):
    """The checkpoint does not match the model its config describes."""


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """auto: cuda, then mps, then cpu."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device 'mps' was asked for but it is not available; use --device cpu or auto")
    return dev


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device, n_params: int) -> torch.dtype:
    """auto: bf16 on CUDA with bf16 (else fp16), fp16 on MPS; on CPU fp32, except bf16 from 500 M
    parameters on where the CPU has native bf16 matmuls (AVX512-bf16/AMX; without them bf16 is slower)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in (None, "auto"):
        try:
            return DTYPES[dtype]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r}; allowed: auto, {', '.join(DTYPES)}") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if n_params >= 500_000_000 and cpu_has_native_bf16() else torch.float32


def cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index} is not a valid safetensors index: {exc}") from exc
        files = [folder / n for n in names]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise CheckpointError(f"shards listed in {index.name} are missing: {missing}")
        return files
    single = folder / "model.safetensors"
    if single.exists():
        return [single]
    raise FileNotFoundError(f"no model.safetensors (or model.safetensors.index.json) in {folder}")


def read_checkpoint_shapes(files: list[Path]) -> dict[str, tuple[tuple[int, ...], Path]]:
    """Names and shapes from the safetensors headers (reads no tensor data)."""
    out: dict[str, tuple[tuple[int, ...], Path]] = {}
    for f in files:
        try:
            with safe_open(f, framework="pt") as sf:
                for k in sf.keys():
                    out[k] = (tuple(sf.get_slice(k).get_shape()), f)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"checkpoint file {f} is corrupt or truncated ({exc}); download it again") from exc
    return out


def check_keys(expected: dict[str, torch.Size], found: dict[str, tuple[tuple[int, ...], Path]]) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [f"{k}: checkpoint {list(found[k][0])}, model {list(expected[k])}"
             for k in sorted(set(expected) & set(found)) if tuple(expected[k]) != found[k][0]]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            more = " ..." if len(missing) > 8 else ""
            parts.append(f"{len(missing)} missing key(s): {', '.join(missing[:8])}{more}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:8])}"
                         + (" ..." if len(unexpected) > 8 else ""))
        if wrong:
            parts.append(f"{len(wrong)} wrong-shape weight(s): {'; '.join(wrong[:8])}")
        raise CheckpointError("checkpoint does not match the config: " + " | ".join(parts))


def build_meta_model(config: JanusFlowConfig) -> JanusFlowModel:
    with torch.device("meta"):
        return JanusFlowModel(config)


def load_model(folder: Path, config: JanusFlowConfig, device: torch.device, dtype: torch.dtype) -> JanusFlowModel:
    """Strictly load the weights of ``folder`` into a model built from ``config``."""
    model = build_meta_model(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    files = _weight_files(folder)
    found = read_checkpoint_shapes(files)
    check_keys(expected, found)
    state: dict[str, torch.Tensor] = {}
    load_device = "cpu" if device.type == "mps" else str(device)
    for f in files:
        try:
            with safe_open(f, framework="pt", device=load_device) as sf:
                for k in sf.keys():
                    t = sf.get_tensor(k)
                    state[k] = t.to(dtype) if t.is_floating_point() else t
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint file {f} could not be read ({exc}); it may be truncated") from exc
    model.load_state_dict(state, strict=True, assign=True)
    del state
    reset_rope_buffers(model.language_model, "cpu")  # meta buffers -> real fp32 values, then move
    model.to(device)
    leftover = [n for n, b in model.named_buffers() if b.is_meta]
    if leftover:
        raise RuntimeError(f"buffers left uninitialised after loading: {leftover}")
    return model.eval().requires_grad_(False)


def format_params(n: int) -> str:
    """A parameter count for people: 950 -> '950', 9_612_345 -> '9.61 M', 1_300_000_000 -> '1.30 B'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}" if n < 100 * size else f"{n / size:.0f} {unit}"
    return str(n)


def read_sampling(folder: Path | None) -> SamplingSettings:
    """The model's recommended sampling settings (``sampling.json``: steps, cfg), over the defaults.

    Each key and value is checked against :mod:`janusflow_core.limits`; a bad file is an error naming the
    file and the key, so a typo there is found when the model loads, not at the first generation.
    """
    out = default_sampling()
    if folder is None or not (folder / SAMPLING_FILE).exists():
        return out
    path = folder / SAMPLING_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); expected e.g. {json.dumps(DEFAULT_SAMPLING)}") \
            from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object such as {json.dumps(DEFAULT_SAMPLING)}, "
                              f"got {type(data).__name__}")
    unknown = sorted(set(data) - set(DEFAULT_SAMPLING))
    if unknown:
        raise CheckpointError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; allowed keys: "
                              f"{', '.join(DEFAULT_SAMPLING)}")
    try:
        if "steps" in data:
            out["steps"] = limits.check_number("steps", data["steps"], limits.STEPS, integer=True)
        if "cfg" in data:
            out["cfg"] = limits.check_number("cfg", data["cfg"], limits.GUIDANCE)
    except limits.InputError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return out


def load_processor(folder: Path, config: JanusFlowConfig) -> JanusFlowProcessor:
    """The folder's tokenizer, chat format and image settings, checked against ``config``'s image tokens."""
    from transformers.utils import logging as hf_logging

    from .processing import JanusFlowProcessor

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # AutoTokenizer peeks at our config.json and warns about its model_type
    try:
        processor = JanusFlowProcessor.from_pretrained(folder)
    finally:
        hf_logging.set_verbosity(level)
    if processor.num_image_tokens != config.num_und_tokens:
        s = config.siglip
        raise CheckpointError(f"processor_config.json says num_image_tokens={processor.num_image_tokens} "
                              f"but the understanding encoder makes {config.num_und_tokens} tokens; allowed: "
                              f"(image_size // patch_size)^2 = ({s.image_size} // {s.patch_size})^2 = "
                              f"{config.num_und_tokens} (the official model fails on a mismatch too)")
    return processor


def load_pretrained(path_or_id: str | Path | None = None, *, device: str | torch.device | None = "auto",
                    dtype: str | torch.dtype | None = "auto", vae: str | Path | None = None,
                    load_8bit: bool = False, siglip_entry: dict[str, Any] | None = None,
                    gen_latent_size: int | None = None, with_processor: bool = True,
                    with_vae: bool = True) -> JanusFlowBundle:
    """Load a JanusFlow checkpoint (official layout) with its processor and VAE.

    path_or_id: a local folder or a hub id such as ``deepseek-ai/JanusFlow-1.3B``; None means the
    embedded shapes model in ``assets/``. vae: folder or hub id; default ``<folder>/vae`` when present,
    else ``stabilityai/sdxl-vae``. dtype: auto | fp32 | bf16 | fp16. load_8bit: LLM linears in 8 bit
    through bitsandbytes (CUDA only); the vision parts and the VAE stay unquantized.
    """
    if path_or_id is None:
        if not (DEFAULT_MODEL / "config.json").exists():
            raise FileNotFoundError(f"no model given and the embedded default model ({DEFAULT_MODEL}) is missing")
        path_or_id = DEFAULT_MODEL
    folder = resolve_folder(path_or_id, what="model", allow_patterns=[
        "*.json", "*.safetensors", "tokenizer*", "*.model", "vae/*"])
    config = JanusFlowConfig.from_file(folder, siglip_entry=siglip_entry, gen_latent_size=gen_latent_size)
    dev = pick_device(device)
    n_params = sum(v.numel() for v in build_meta_model(config).state_dict().values())
    dt = pick_dtype(dtype, dev, n_params)
    if load_8bit:
        if dev.type != "cuda":
            raise RuntimeError("8-bit loading needs a CUDA GPU (bitsandbytes); use --dtype bf16/fp16 elsewhere")
        if dt == torch.float32:
            dt = torch.float16
    sampling = read_sampling(folder)  # checked before the weights are read
    log.info("loading %s (%s params) on %s in %s", folder, format_params(n_params), dev, dt)
    model = load_model(folder, config, dev, dt)
    if load_8bit:
        from .quantization import quantize_llm_8bit

        quantize_llm_8bit(model)
    processor = load_processor(folder, config) if with_processor else None
    vae_model = None
    if with_vae:
        from .vae import VAE

        source = vae if vae is not None else (folder / "vae" if (folder / "vae").is_dir() else DEFAULT_VAE)
        vae_model = VAE.from_pretrained(source, device=dev, dtype=torch.float32 if dt == torch.float32 else dt)
        if vae_model.latent_channels != config.latent_channels:
            raise CheckpointError(f"the VAE has {vae_model.latent_channels} latent channels but the model "
                                  f"expects {config.latent_channels}")
    name = str(path_or_id) if not Path(str(path_or_id)).is_dir() else Path(path_or_id).resolve().name
    return JanusFlowBundle(model=model, config=config, processor=processor, vae=vae_model,
                           sampling=sampling, path=folder, name=name)


def save_pretrained(model: JanusFlowModel, folder: str | Path, *, processor: JanusFlowProcessor | None = None,
                    vae: VAE | AutoencoderKL | None = None, sampling: Mapping[str, Any] | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (official key names) and, when given, the
    processor files, the VAE (``vae/``) and the recommended sampling settings."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_official_dict()
    if dtype is not None:
        cfg["torch_dtype"] = cfg["language_config"]["torch_dtype"] = str(dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    state = {k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach())
             .contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if processor is not None:
        processor.save_pretrained(folder)
    if vae is not None:
        auto = getattr(vae, "autoencoder", vae)
        auto.save_pretrained(folder / "vae")
    if sampling is not None:
        (folder / SAMPLING_FILE).write_text(json.dumps(dict(sampling), indent=2) + "\n")
    return folder
