"""The JanusFlow model: one LLM that reads SigLIP image features (understanding) and predicts the
velocity of a rectified flow in VAE latent space (generation).

Attribute names are the official checkpoint's key prefixes, so ``state_dict()`` has the published
layout. All widths come from :class:`~janusflow_core.config.JanusFlowConfig`.

Time convention (the one place it is stated): t = 0 is pure noise, t = 1 is the image;
z_t = t * x + (1 - t) * z0 and the network predicts v = x - z0. The time embedding receives
t * config.time_scale (1000 for the published model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache, StaticCache

from ..config import JanusFlowConfig
from .attention import ATTENTION
from .gen_decoder import GenerationDecoder
from .gen_encoder import GenerationEncoder
from .llm import build_llm
from .norms import RMSNorm
from .siglip import UnderstandingEncoder


@dataclass
class PromptState:
    """The text prefix of a generation batch: R rows (cond then uncond), P positions.

    With ``cache`` set, the prefix keys/values were computed once and every velocity evaluation runs
    only the 1 + G time/image positions on top of them (the official demo recomputes the prefix at
    every step, SPEC 6.1; causal attention makes both identical). A StaticCache is preallocated for
    P + 1 + G positions: every evaluation writes its 1 + G positions in place, so the LLM forward has
    the same shapes and buffers each time (what CUDA graphs need).
    """

    embeds: torch.Tensor  # (R, P, D)
    attention_mask: torch.Tensor  # (R, P) long
    cache: DynamicCache | StaticCache | None = None
    # (R,) the position of each row's next token, for rows of prompts of different lengths padded into one
    # cache (janusflow_core.pipelines.batching); None: every row continues at P
    next_position: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return self.embeds.shape[0]

    @property
    def length(self) -> int:
        return self.embeds.shape[1]

    def positions(self, n_new: int) -> torch.Tensor:
        """(R, n_new) positions of ``n_new`` tokens appended after the prefix (each row's own)."""
        start = (torch.full((self.rows,), self.length, device=self.embeds.device) if self.next_position is None
                 else self.next_position)
        return start[:, None] + torch.arange(n_new, device=start.device)


class JanusFlowModel(nn.Module):
    def __init__(self, config: JanusFlowConfig, attn_implementation: str = ATTENTION):
        super().__init__()
        self.config = config
        d = config.llm.hidden_size
        enc_width = config.gen_enc_width
        self.vision_und_enc_model = UnderstandingEncoder(config.siglip)
        self.vision_und_enc_aligner = nn.Linear(config.siglip.width, d)
        self.beg_of_und_embed = nn.Parameter(torch.zeros(1, d))
        self.vision_gen_enc_model = GenerationEncoder(config.gen_enc)
        self.vision_gen_enc_aligner = nn.Linear(enc_width, d)
        self.language_model = build_llm(config.llm, attn_implementation)
        self.vision_gen_dec_aligner_norm = RMSNorm(d, config.llm.rms_norm_eps)
        self.vision_gen_dec_aligner = nn.Linear(d, config.gen_dec.in_channels)
        self.vision_gen_dec_model = GenerationDecoder(config.gen_dec, skip_channels=enc_width)
        # the velocity's fast path (None: on CUDA only); see prepare_prompt and velocity
        self.static_prompt_cache: bool | None = None
        self.compile_velocity: bool | None = None
        self._compiled_llm: nn.Module | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.beg_of_und_embed.dtype

    @property
    def device(self) -> torch.device:
        return self.beg_of_und_embed.device

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        # Negative ids (official processor's masked slots) read row 0; never modify the caller's ids.
        return self.language_model.get_input_embeddings()(ids.clamp(min=0))

    # -- understanding (SPEC 4.5, 4.6) --------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) -> (n, 1 + N, D): beg_of_und_embed followed by the aligned patch features."""
        feats = self.vision_und_enc_model(pixel_values.to(self.dtype))  # (n, N, W)
        aligned = self.vision_und_enc_aligner(feats)  # (n, N, D)
        beg = self.beg_of_und_embed.expand(aligned.shape[0], 1, -1)
        return torch.cat([beg, aligned], dim=1)

    def prepare_inputs_embeds(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                              images_seq_mask: torch.Tensor | None = None,
                              images_emb_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with image positions (start tag + N placeholders per image) overwritten,
        in order, by the encoded images flagged in ``images_emb_mask``.

        input_ids (B, T); pixel_values (B, n, 3, S, S); images_seq_mask (B, T); images_emb_mask (B, n, 1+N).
        """
        embeds = self.embed_tokens(input_ids)  # (B, T, D)
        if images_seq_mask is None or not bool(images_seq_mask.any()):
            return embeds
        n_slots, n_embeds = int(images_seq_mask.sum()), int(images_emb_mask.sum())
        if n_slots != n_embeds:
            raise ValueError(f"image token count mismatch: the prompt has {n_slots} image positions but the "
                             f"images provide {n_embeds} embeddings ({self.config.num_und_tokens + 1} per image)")
        real = images_emb_mask.any(dim=-1)  # (B, n) which image slots hold an image
        encoded = self.encode_images(pixel_values[real])  # (n_real, 1+N, D)
        full = encoded.new_zeros(*real.shape, *encoded.shape[1:])  # (B, n, 1+N, D)
        full[real] = encoded
        embeds = embeds.clone()
        embeds[images_seq_mask] = full[images_emb_mask].to(embeds.dtype)
        return embeds

    # -- generation (SPEC 5.2) ---------------------------------------------------------------------
    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """(R,) t in [0, 1] -> (R, D). Scaled by config.time_scale before the sinusoid."""
        return self.vision_gen_enc_model.embed_time(t * self.config.time_scale, self.dtype)

    def encode_latents(self, z: torch.Tensor, t_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, C, h, w) -> image tokens (R, G, D) and the skip tensor (R, C_enc, g, g)."""
        skip = self.vision_gen_enc_model(z.to(self.dtype), t_emb)
        tokens = self.vision_gen_enc_aligner(skip.flatten(2).transpose(1, 2))  # (R, G, D), row-major
        return tokens, skip

    def decode_tokens(self, hidden: torch.Tensor, skip: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """LLM outputs at the image positions (R, G, D) -> velocity (R, C, h, w)."""
        x = self.vision_gen_dec_aligner(self.vision_gen_dec_aligner_norm(hidden))  # (R, G, C_dec)
        gh, gw = skip.shape[-2:]  # the encoder's grid, as the conv arithmetic made it
        x = x.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)  # (R, C_dec, g, g)
        return self.vision_gen_dec_model(x, skip, t_emb)

    def prepare_prompt(self, tokens: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool = True,
                       static_cache: bool | None = None) -> PromptState:
        """Embed the (R, P) prompt rows and, with ``use_cache``, run them through the LLM once.

        ``static_cache`` (default :attr:`static_prompt_cache`, which None makes True on CUDA): keep the prefix
        in a StaticCache sized for one velocity evaluation instead of a DynamicCache; same velocities.
        """
        embeds = self.embed_tokens(tokens.to(self.device))
        mask = attention_mask.to(self.device).long()
        state = PromptState(embeds=embeds, attention_mask=mask)
        if use_cache:
            if static_cache is None:
                static_cache = self.static_prompt_cache
            if static_cache is None:
                static_cache = self.device.type == "cuda"
            cfg = self.language_model.config
            cache = (StaticCache(config=cfg, max_cache_len=embeds.shape[1] + 1 + self.config.num_gen_tokens)
                     if static_cache else DynamicCache(config=cfg))
            pos = torch.arange(embeds.shape[1], device=self.device).expand(embeds.shape[0], -1)
            self.language_model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos,
                                      cache=cache, use_cache=True)
            state.cache = cache
        return state

    def _cached_llm(self, cache: DynamicCache | StaticCache) -> nn.Module:
        """The LLM body for an evaluation on the prompt cache: compiled for a static cache when
        :attr:`compile_velocity` (None: on CUDA), with CUDA graphs on CUDA (``mode="reduce-overhead"``);
        every (rows, prompt length) is one compiled graph. Plain otherwise."""
        compile_it = self.device.type == "cuda" if self.compile_velocity is None else self.compile_velocity
        if not (compile_it and isinstance(cache, StaticCache)):
            return self.language_model.model
        if self._compiled_llm is None:
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._compiled_llm = torch.compile(self.language_model.model, mode=mode, dynamic=False)
        return self._compiled_llm

    def velocity(self, z: torch.Tensor, t: torch.Tensor, prompt: PromptState) -> torch.Tensor:
        """v(z, t) for each of the R prompt rows. z (R, C, h, w), t (R,) in [0, 1) -> (R, C, h, w)."""
        r, p = prompt.rows, prompt.length
        t_emb = self.time_embedding(t.to(self.device))  # (R, D)
        tokens, skip = self.encode_latents(z, t_emb)  # (R, G, D)
        x = torch.cat([t_emb[:, None], tokens], dim=1)  # (R, 1 + G, D): t_emb enters unprojected
        n_new = x.shape[1]
        mask = torch.cat([prompt.attention_mask, prompt.attention_mask.new_ones(r, n_new)], dim=1)
        if prompt.cache is not None:
            pos = prompt.positions(n_new)  # (R, 1 + G): each row's own, after its prompt
            out = self._cached_llm(prompt.cache)(inputs_embeds=x, attention_mask=mask, position_ids=pos,
                                                 cache=prompt.cache, use_cache=True)
            hidden = out.last_hidden_state[:, -tokens.shape[1]:]  # (R, G, D), after the final norm
            prompt.cache.crop(-n_new)  # back to the prompt prefix (a static cache overwrites those positions)
        else:
            seq = torch.cat([prompt.embeds, x], dim=1)  # (R, P + 1 + G, D)
            pos = torch.arange(p + n_new, device=self.device).expand(r, -1)
            out = self.language_model.model(inputs_embeds=seq, attention_mask=mask, position_ids=pos, use_cache=False)
            hidden = out.last_hidden_state[:, -tokens.shape[1]:]  # (R, G, D), after the final norm
        return self.decode_tokens(hidden, skip, t_emb)
