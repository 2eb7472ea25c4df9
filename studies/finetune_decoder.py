"""Give a trained shapes model the recipe's whole-image decoder pass (``vae_train.finetune_decoder``).

    python -m studies.finetune_decoder --model runs/janusflow-shapes-v18-export --out runs/v18-decoder

Copies the model folder to ``--out`` and trains only its VAE decoder there; the encoder and the latent
scaling stay bit-identical, so the LLM needs no retraining. This is how the shipped model got its decoder
(its run predates the recipe step). Score the result with ``studies/score_model.py`` and check the VAE alone
with ``python -m janusflow_core.evaluation vae --model OUT``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from janusflow_core.training.shapes_recipe import Recipe
from janusflow_core.training.vae_train import finetune_decoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model folder with a vae/ subfolder")
    ap.add_argument("--out", required=True, help="new model folder (must not exist)")
    ap.add_argument("--steps", type=int, default=Recipe.vae_decoder_steps)
    ap.add_argument("--batch", type=int, default=Recipe.vae_decoder_batch)
    ap.add_argument("--seed", type=int, default=Recipe.seed)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    src, out = Path(args.model), Path(args.out)
    if not (src / "vae" / "config.json").exists():
        sys.exit(f"error: {src}/vae/config.json not found; --model takes an exported model folder")
    if out.exists():
        sys.exit(f"error: {out} exists; --out must be a new folder")
    torch.set_num_threads(args.threads)
    shutil.copytree(src, out)
    vae = AutoencoderKL.from_pretrained(src / "vae")
    t0 = time.time()
    log: list = []
    finetune_decoder(vae, args.steps, batch=args.batch, seed=args.seed, log=log)
    vae.save_pretrained(out / "vae")  # the config is the source's (the latent scaling included)
    print(f"{args.steps} decoder steps in {time.time() - t0:.0f} s, last mse {log[-1]['mse']:.5f}; model in {out}")


if __name__ == "__main__":
    main()
