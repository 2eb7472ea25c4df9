"""Training forwards of JanusFlow built from the model's public pieces (SPEC 4.6, 5.1-5.2).

Generation: ``[prompt embeds (P), t_emb (1), image tokens (G)]``; the velocity is read from the last G
positions through the decoder; REPA reads the hidden states of a chosen LLM layer at the same positions.
Understanding / text: the usual causal LM on the processor's left-padded batch, logits only where a
response token is predicted (the vocabulary head is not run on prompt and image positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..modeling import JanusFlowModel
from . import losses


class RepaHead(nn.Module):
    """The small MLP of REPA (eq. 8): LLM hidden size -> understanding-encoder width."""

    def __init__(self, hidden: int, out: int, width: int | None = None):
        super().__init__()
        width = width or 2 * hidden
        self.net = nn.Sequential(nn.Linear(hidden, width), nn.SiLU(), nn.Linear(width, out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded row: 0 at its first real token (padding slots clamp to 0)."""
    return (mask.long().cumsum(1) - 1).clamp(min=0)


def generation_forward(model: JanusFlowModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                       position_mask: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor,
                       repa_layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Velocity (B, C, h, w) for noisy latents ``z_t`` at times ``t`` (B,), and the hidden states of
    LLM layer ``repa_layer`` at the image positions (B, G, D) (None without REPA).

    ``prompt_mask`` is the attention mask of the (possibly CFG-dropped) prompt rows; ``position_mask``
    the undropped one, from which position ids are counted, so a dropped row keeps the positional gap of
    its prompt exactly as the unconditional row at sampling time (SPEC 5.1).
    """
    b = prompt_ids.shape[0]
    embeds = model.embed_tokens(prompt_ids)  # (B, P, D)
    t_emb = model.time_embedding(t)  # (B, D)
    tokens, skip = model.encode_latents(z_t, t_emb)  # (B, G, D)
    g = tokens.shape[1]
    seq = torch.cat([embeds, t_emb[:, None].to(embeds.dtype), tokens.to(embeds.dtype)], dim=1)  # (B, P+1+G, D)
    ones = prompt_mask.new_ones(b, 1 + g)
    mask = torch.cat([prompt_mask, ones], dim=1)
    pos = _positions(torch.cat([position_mask, ones], dim=1))
    out = model.language_model.model(inputs_embeds=seq, attention_mask=mask, position_ids=pos,
                                     output_hidden_states=repa_layer is not None, use_cache=False)
    v = model.decode_tokens(out.last_hidden_state[:, -g:], skip, t_emb)
    hidden = out.hidden_states[repa_layer][:, -g:] if repa_layer is not None else None
    return v, hidden


def lm_forward(model: JanusFlowModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               labels: torch.Tensor, pixel_values: torch.Tensor | None = None,
               images_seq_mask: torch.Tensor | None = None, images_emb_mask: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (M, V) at the M positions that predict a response token, and those targets (M,).

    ``labels`` (B, T) hold the token to learn at each position and -100 elsewhere; position i predicts
    labels[i + 1].
    """
    embeds = model.prepare_inputs_embeds(input_ids, pixel_values, images_seq_mask, images_emb_mask)
    out = model.language_model.model(inputs_embeds=embeds, attention_mask=attention_mask,
                                     position_ids=_positions(attention_mask), use_cache=False)
    targets = labels[:, 1:]
    keep = targets != -100  # (B, T-1)
    hidden = out.last_hidden_state[:, :-1][keep]  # (M, D)
    return model.language_model.lm_head(hidden), targets[keep]


@dataclass
class LossWeights:
    ar: float = 1.0
    flow: float = 1.0
    repa: float = 0.0


class TrainModule(nn.Module):
    """Model + REPA head as one module, so that a DDP wrapper sees every trained parameter."""

    def __init__(self, model: JanusFlowModel, repa_head: RepaHead | None, repa_layer: int | None,
                 weights: LossWeights):
        super().__init__()
        self.model = model
        self.repa_head = repa_head
        self.repa_layer = repa_layer if (repa_head is not None and weights.repa > 0) else None
        self.weights = weights
        # True while a new REPA head is fitted to the model as it is: its loss trains the head alone (the hidden
        # states are detached), so a random head's first gradients do not reach, and perturb, a trained model
        self.repa_head_only = False
        # REPA targets of the generation pool's images, kept while the understanding encoder is frozen
        # (stages 1-2): each pool image is encoded once instead of every time it is drawn
        self._repa_targets: dict[int, torch.Tensor] = {}

    def _encoder_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.model.vision_und_enc_model.parameters())

    def repa_targets(self, pixel_values: torch.Tensor, pool_index: torch.Tensor | None) -> torch.Tensor:
        """Stop-gradient understanding-encoder features (B, N, W) of the target images."""
        enc = self.model.vision_und_enc_model
        if pool_index is None or not self._encoder_frozen():
            self._repa_targets.clear()
            with torch.no_grad():
                return enc(pixel_values.to(self.model.dtype))
        keys = pool_index.tolist()
        missing = [k for k, key in enumerate(keys) if key not in self._repa_targets]
        if missing:
            with torch.no_grad():
                feats = enc(pixel_values[missing].to(self.model.dtype))
            for k, f in zip(missing, feats):
                self._repa_targets[keys[k]] = f
        return torch.stack([self._repa_targets[key] for key in keys])

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Loss terms of one mixed batch and their weighted sum under ``"loss"``."""
        terms: dict[str, torch.Tensor] = {}
        total = None
        lm = batch.get("lm")
        if lm is not None:
            logits, targets = lm_forward(self.model, lm["input_ids"], lm["attention_mask"], lm["labels"],
                                         lm["pixel_values"], lm["images_seq_mask"], lm["images_emb_mask"])
            terms.update(losses.ar_loss(logits, targets))
            total = self.weights.ar * terms["ar"]
        gen = batch.get("gen")
        if gen is not None:
            x, z0, t = gen["latents"], gen["noise"], gen["t"]
            z_t = losses.interpolate(x, z0, t)
            v, hidden = generation_forward(self.model, gen["prompt_ids"], gen["prompt_mask"], gen["position_mask"],
                                           z_t, t, self.repa_layer)
            terms.update(losses.flow_loss(v, x, z0))
            part = self.weights.flow * terms["flow"]
            if hidden is not None:
                feats = self.repa_targets(gen["pixel_values"], gen.get("pool_index"))  # (B, N, W)
                feats = losses.match_grid(feats, self.model.config.gen_grid)
                terms.update(losses.repa_loss(self.repa_head(hidden.detach() if self.repa_head_only else hidden),
                                              feats))
                part = part + self.weights.repa * terms["repa"]
            total = part if total is None else total + part
        terms["loss"] = total
        return terms
