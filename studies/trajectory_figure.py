"""A figure of denoising trajectories: one row per (CFG weight, seed), one column per third step.

    python -m studies.trajectory_figure --prompt "a triangle" --cfg 1 --cfg 3 --seeds 3 5 6 \
        --out docs/trajectories-a-triangle.png

Each tile is the predicted clean image x1_hat = z_t + (1 - t) v decoded by the VAE (what the app's
generation tab shows), the last column the final image.
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image

from janusflow_core import GenerationPipeline, load_pretrained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--cfg", type=float, action="append", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--every", type=int, default=3, help="show every N-th step")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    pipe = GenerationPipeline(load_pretrained(args.model, device="cpu", dtype="float32"))
    rows = []
    for w in args.cfg:
        for seed in args.seeds:
            tiles = []
            for state in pipe.iterate(args.prompt, steps=args.steps, guidance_scale=w, seed=seed):
                if state.index % args.every == args.every - 1:
                    tiles.append(pipe.decode(state.x1_hat)[0])
            tiles.append(pipe.decode(state.z_next)[0])
            rows.append(tiles)
    size = rows[0][0].width + 2
    sheet = Image.new("RGB", (len(rows[0]) * size, len(rows) * size), (128, 128, 128))
    for i, tiles in enumerate(rows):
        for j, tile in enumerate(tiles):
            sheet.paste(tile, (j * size, i * size))
    sheet.save(args.out)
    print(f"{args.out}: rows = CFG {args.cfg} x seeds {args.seeds}, columns = every {args.every}th step + final")


if __name__ == "__main__":
    main()
