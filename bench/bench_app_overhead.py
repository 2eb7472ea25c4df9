"""What the app's live preview costs, and what a run through the app's endpoint costs against the pipeline.

For each batch size and preview mode, one generation runs through ``GenerationPipeline.iterate`` and
every step is timed in parts, as if each step were previewed (``app.generate.preview_images``):

  * step     the solver step (model velocity with CFG, Euler update);
  * decode   the preview: x̂1 through the VAE (``x1``), or through the fitted linear map (``x1-fast``);
  * sheet    tiling the batch into one image (at the model's resolution; the page enlarges it);
  * png      what Gradio does with each yielded image: encode a PNG into its cache (``gr.Image.postprocess``).

Preview cost = (decode + sheet + png) / step: what one preview costs in steps. The app no longer pays it on
the sampler's path (the sampler runs in its own thread; the handler previews the newest step at a display
rate), so unless ``--no-api`` the same runs also go through the launched app and gradio_client (queue,
Gradio's per-update work, server-sent events), against the pipeline alone (every step, then one decode):

  * fixed    the per-request overhead: a 1-step run through the app less the same run in the pipeline;
  * ratio    (run through the app - fixed) / pipeline run, for ``--steps`` steps (goal: <= 1.5);
  * previews distinct previews the client received during the run (goal: >= 5 for 30 steps).

    python -m bench.bench_app_overhead [--model DIR] [--steps 30] [--images 1 4] [--threads N] [--no-api]
        [--modes x1 x1-fast]

Without ``--model`` it uses the embedded model (assets/janusflow-shapes) or, when that is missing, a
tiny random model built on the fly (the table says which).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import gradio as gr
import torch

from app.display import grid
from app.engine import Engine, Loaded
from app.generate import preview_images
from janusflow_core.bundle import DEFAULT_MODEL

MODES = ("x1", "x1-fast")

PROMPT = "a blue circle and a yellow square"


def ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


def in_process(loaded: Loaded, steps: int, images: int, mode: str) -> dict[str, float]:
    png = gr.Image(type="pil", format="png")
    parts: dict[str, list[float]] = {"step": [], "decode": [], "sheet": [], "png": []}
    it = loaded.generator.iterate(PROMPT, steps, None, 0, images, "euler")
    next(it)  # the first step also encodes the prompt: not a typical step
    while True:
        t0 = time.perf_counter()
        try:
            state = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        decoded = preview_images(loaded, state, mode)
        t2 = time.perf_counter()
        sheet = grid(decoded)
        t3 = time.perf_counter()
        png.postprocess(sheet)
        t4 = time.perf_counter()
        for key, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            parts[key].append(seconds)
    out = {k: ms(v) for k, v in parts.items()}
    out["sheet_px"] = sheet.width
    return out


def bare_run(loaded: Loaded, steps: int, images: int) -> float:
    """Seconds for the same generation without any preview: every step, then one final decode."""
    t = time.perf_counter()
    *_, last = loaded.generator.iterate(PROMPT, steps, 2.0, 0, images, "euler")
    loaded.generator.decode(last.result)
    return time.perf_counter() - t


def through_api(client: Any, steps: int, images: int, mode: str) -> tuple[float, int]:
    """(seconds, distinct previews) for the whole streamed run as a gradio_client sees it (submit to final
    images). The client does not download the PNGs (a browser fetches them alongside; gradio_client would
    fetch each one synchronously, which measures the client, not the app)."""
    t = time.perf_counter()
    job = client.submit(PROMPT, 2.0, steps, 0, images, "euler", mode, api_name="/generate")
    job.result()
    seconds = time.perf_counter() - t
    previews = {str(o[0]) for o in job.outputs()[:-1] if o[0] != {"__type__": "update"}}
    return seconds, len(previews)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: embedded model, else a tiny random one)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--images", type=int, nargs="+", default=[1, 4])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-api", action="store_true", help="skip the run through the launched app")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=["x1", "x1-fast", "zt"],
                   help="preview modes (the page's default is x1)")
    p.add_argument("--repeats", type=int, default=3, help="runs per figure through the app (the fastest counts)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model, label = args.model, Path(args.model).name
        elif (DEFAULT_MODEL / "config.json").exists():
            model, label = DEFAULT_MODEL, "embedded janusflow-shapes"
        else:
            from janusflow_core.testing import make_tiny_model_dir

            model, label = make_tiny_model_dir(Path(tmp) / "tiny"), "tiny random (embedded model missing)"
        loaded = Engine(model, device="cpu", dtype="fp32").get()
        size = loaded.image_size
        print(f"model: {label} · {size}x{size} images · cpu fp32 · {torch.get_num_threads()} torch thread(s) · "
              f"{args.steps} Euler steps, CFG 2\n")
        cases = [(n, mode) for n in args.images for mode in args.modes]
        in_proc = {}
        for n, mode in cases:
            in_process(loaded, 3, n, mode)  # warm-up (and the one-off fit of the fast preview)
            in_proc[n, mode] = in_process(loaded, args.steps, n, mode)
        api = {}
        if not args.no_api:
            from gradio_client import Client

            from tools.serve import serve

            with serve(model) as (url, _):
                client = Client(url, verbose=False, download_files=False)
                for n, mode in cases:
                    through_api(client, 4, n, mode)  # warm-up
                    fixed = (min(through_api(client, 1, n, mode)[0] for _ in range(args.repeats))
                             - min(bare_run(loaded, 1, n) for _ in range(args.repeats)))
                    bare = min(bare_run(loaded, args.steps, n) for _ in range(args.repeats))
                    streamed = [through_api(client, args.steps, n, mode) for _ in range(args.repeats)]
                    api[n, mode] = (bare, min(s for s, _ in streamed), fixed, min(p for _, p in streamed))

    head = "| images | preview | step ms | decode ms | sheet ms | PNG ms | sheet px | preview cost |"
    rule = "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    if api:
        head += " pipeline s | via app s | fixed s | ratio | previews |"
        rule += " ---: | ---: | ---: | ---: | ---: |"
    print(head)
    print(rule)
    for (n, mode), r in in_proc.items():
        extra = r["decode"] + r["sheet"] + r["png"]
        row = (f"| {n} | {mode} | {r['step']:.2f} | {r['decode']:.2f} | {r['sheet']:.2f} | {r['png']:.2f} | "
               f"{r['sheet_px']} | {100 * extra / r['step']:.1f} % |")
        if (n, mode) in api:
            bare, streamed, fixed, previews = api[n, mode]
            row += f" {bare:.2f} | {streamed:.2f} | {fixed:.2f} | {(streamed - fixed) / bare:.2f} | {previews} |"
        print(row)
    print("\npreview cost = (decode + sheet + PNG) / step (medians over the steps); pipeline = the run without "
          "previews; fixed = a 1-step run through the app less the same in the pipeline; ratio = (via app - "
          f"fixed) / pipeline; previews = the fewest distinct previews a {args.steps}-step run sent "
          f"(fastest of {args.repeats} runs each).")


if __name__ == "__main__":
    main()
