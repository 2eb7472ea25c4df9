"""Concurrent users through the app's real endpoint: images per second and latencies for N clients.

The app is launched in-process on a free port (``tools.serve``, as the tests do) with generation batching
on; for each N in ``--clients`` that many ``gradio_client`` clients (one session each, like N browser tabs)
call ``/generate`` at the same moment, ``--rounds`` times in a row, each with its own prompt and seed and
the page's default preview mode. Printed per N: images per second (all clients' images over the wall time),
its ratio to N = 1, and each request's latency (submit to final images) as mean and maximum, the maximum
also against the mean latency at N = 1 (a client's wait compared with being served alone). The batcher's
counters say how many rows one forward carried on average.

    python -m bench.bench_serving [--model DIR] [--clients 1 2 4 8] [--steps 30] [--rounds 2] [--threads N]
        [--no-batching] [--preview x1]

Without ``--model`` it uses the embedded model (assets/janusflow-shapes) or, when that is missing, a tiny
random model built on the fly (the header says which).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch

from janusflow_core.bundle import DEFAULT_MODEL

PROMPTS = ["a red circle", "a blue circle and a yellow square", "three squares", "a green triangle",
           "a circle above a triangle", "a square left of a circle", "two purple triangles",
           "an orange square below a blue circle"]


def one_round(clients: list, steps: int, preview: str, round_index: int) -> tuple[float, list[float], list[int]]:
    """All clients generate at once; (wall seconds, each client's latency, each client's preview count)."""
    barrier = threading.Barrier(len(clients))
    latencies = [0.0] * len(clients)
    previews = [0] * len(clients)
    errors: list[BaseException] = []

    def user(k: int) -> None:
        try:
            barrier.wait()
            start = time.perf_counter()
            job = clients[k].submit(PROMPTS[k % len(PROMPTS)], 2.0, steps, 1000 * round_index + k, 1, "euler",
                                    preview, api_name="/generate")
            job.result()
            latencies[k] = time.perf_counter() - start
            previews[k] = len({str(o[0]) for o in job.outputs()[:-1] if isinstance(o[0], (str, dict))
                               and o[0] != {"__type__": "update"}})
        except BaseException as exc:  # reported after the round
            errors.append(exc)

    threads = [threading.Thread(target=user, args=(k,)) for k in range(len(clients))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start, latencies, previews


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model folder, or 'tiny' for a tiny random model (default: the "
                   "embedded model, else a tiny random one)")
    p.add_argument("--out", default=None, help="also append the rows to this JSON-lines file")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=2, help="requests per client, one after another")
    p.add_argument("--preview", default="x1", choices=["x1", "x1-fast", "zt"], help="the page's default is x1")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-batching", action="store_true", help="each generation runs its own forwards")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (as app.py's --device)")
    p.add_argument("--dtype", default="fp32", choices=["auto", "bf16", "fp16", "fp32"])
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from gradio_client import Client

    from tools.serve import serve

    with tempfile.TemporaryDirectory() as tmp:
        if args.model and args.model != "tiny":
            model, label = args.model, Path(args.model).name
        elif args.model is None and (DEFAULT_MODEL / "config.json").exists():
            model, label = DEFAULT_MODEL, "embedded janusflow-shapes"
        else:
            from janusflow_core.testing import make_tiny_model_dir

            model, label = make_tiny_model_dir(Path(tmp) / "tiny"), "tiny random"
        with serve(model, gen_concurrency=max(args.clients), batching=not args.no_batching,
                   device=args.device, dtype=args.dtype) as (url, engine):
            print(f"model: {label} · {args.device} {args.dtype} · {torch.get_num_threads()} torch thread(s) · "
                  f"{args.steps} Euler steps, CFG 2, 1 image per request, preview {args.preview} · batching "
                  f"{'off' if args.no_batching else 'on'} · {args.rounds} round(s) per N\n")
            clients = [Client(url, verbose=False, download_files=False) for _ in range(max(args.clients))]
            one_round(clients[:1], 3, args.preview, 0)  # warm-up
            batcher = engine.get().generator.batcher
            rows = []
            for n in args.clients:
                forwards0, rows0 = (batcher.forwards, batcher.batched_rows) if batcher else (0, 0)
                walls, latencies, previews = [], [], []
                for r in range(args.rounds):
                    wall, lat, prev = one_round(clients[:n], args.steps, args.preview, r + 1)
                    walls.append(wall)
                    latencies += lat
                    previews += prev
                per_forward = ((batcher.batched_rows - rows0) / max(1, batcher.forwards - forwards0)) if batcher else 2
                rows.append((n, n * args.rounds / sum(walls), statistics.mean(latencies), max(latencies),
                             min(previews), per_forward))
    solo_rate, solo_latency = rows[0][1], rows[0][2]
    print("| clients | images/s | vs 1 client | mean latency s | max latency s | max / solo | min previews "
          "| rows per forward |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, rate, mean, worst, previews, per_forward in rows:
        print(f"| {n} | {rate:.2f} | {rate / solo_rate:.2f}x | {mean:.2f} | {worst:.2f} | "
              f"{worst / solo_latency:.2f}x | {previews} | {per_forward:.1f} |")
    if args.out:
        with open(args.out, "a") as f:
            for n, rate, mean, worst, previews, per_forward in rows:
                f.write(json.dumps({"bench": "serving", "model": label, "threads": torch.get_num_threads(),
                                    "steps": args.steps, "preview": args.preview, "batching": not args.no_batching,
                                    "rounds": args.rounds, "clients": n, "images_per_s": round(rate, 3),
                                    "vs_one_client": round(rate / solo_rate, 2), "mean_latency_s": round(mean, 3),
                                    "max_latency_s": round(worst, 3), "max_vs_solo": round(worst / solo_latency, 2),
                                    "min_previews": previews, "rows_per_forward": round(per_forward, 1),
                                    "device": args.device, "dtype": args.dtype, "load": os.getloadavg()[0],
                                    "cpu": platform.processor() or platform.machine()})
                        + "\n")
    print("\nimages/s = all images / wall time of the rounds; max / solo = the slowest request against the mean "
          "latency of one client alone; min previews = the fewest distinct previews one request received.")


if __name__ == "__main__":
    main()
