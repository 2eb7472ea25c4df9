"""Concurrent users through the app's real endpoint: images per second and latencies for N clients.

The app is launched in-process on a free port (``tools.serve``, as the tests do); for each N in
``--clients`` that many clients call ``/generate`` at the same moment, each with its own prompt and seed and
the page's default preview mode. A client is, by default (``--client http``), Gradio's documented REST route
(``POST /gradio_api/call/generate``, then its event stream) over one keep-alive ``httpx`` connection, as
light as a browser tab is on the server; ``--client gradio`` uses ``gradio_client`` instead, which opens a
new HTTP client (and TLS context) for every call: about 0.1 s of CPU per request on this machine's cores,
which it shares with the server here (on a real deployment the clients are elsewhere).
The rounds are interleaved (round r runs every N, with batching on and, with ``--compare``, off: the
engine's batcher is switched off in between), so that a change in a shared machine's load hits every
figure alike. Printed per N: images per second (N over the median wall time of a round), its ratio to one
client, the median and maximum latency of a request (submit to final images), the maximum against the
median latency of one client alone, the fewest previews a request got, and the rows one forward carried.

    python -m bench.bench_serving [--model DIR|tiny] [--clients 1 2 4 8] [--steps 30] [--rounds 3] [--threads N]
        [--no-batching | --compare] [--preview x1] [--client http|gradio] [--device cpu] [--dtype fp32]
        [--out FILE.jsonl]

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


class HttpClient:
    """One user over Gradio's REST route and one keep-alive connection: ``generate`` returns the preview
    files the stream carried (in order) once the final images have come."""

    def __init__(self, url: str):
        import httpx

        self.http = httpx.Client(base_url=url, timeout=600)

    def generate(self, prompt: str, cfg: float, steps: int, seed: int, preview: str) -> list[str]:
        reply = self.http.post("/gradio_api/call/generate",
                               json={"data": [prompt, cfg, steps, seed, 1, "euler", preview]})
        reply.raise_for_status()
        previews, event = [], None
        with self.http.stream("GET", f"/gradio_api/call/generate/{reply.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    if event == "error":
                        raise RuntimeError(f"/generate failed: {line[6:]}")
                    data = json.loads(line[6:])
                    if event == "complete":
                        if not data[2]:
                            raise RuntimeError(f"/generate ended without images: {data[1]}")
                        return previews
                    if isinstance(data[0], dict) and data[0].get("path"):
                        previews.append(data[0]["path"])
        raise RuntimeError("/generate's stream ended before its final images")


class GradioClient:
    """One user through ``gradio_client`` (one session, like a browser tab)."""

    def __init__(self, url: str):
        from gradio_client import Client

        self.client = Client(url, verbose=False, download_files=False)

    def generate(self, prompt: str, cfg: float, steps: int, seed: int, preview: str) -> list[str]:
        job = self.client.submit(prompt, cfg, steps, seed, 1, "euler", preview, api_name="/generate")
        job.result()
        return [str(o[0]) for o in job.outputs()[:-1] if isinstance(o[0], (str, dict))
                and o[0] != {"__type__": "update"}]


CLIENTS = {"http": HttpClient, "gradio": GradioClient}


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
            shown = clients[k].generate(PROMPTS[k % len(PROMPTS)], 2.0, steps, 1000 * round_index + k, preview)
            latencies[k] = time.perf_counter() - start
            previews[k] = len(set(shown))
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
    p.add_argument("--rounds", type=int, default=3, help="rounds per N (figures are medians over them)")
    p.add_argument("--preview", default="x1", choices=["x1", "x1-fast", "zt"], help="the page's default is x1")
    p.add_argument("--client", default="http", choices=sorted(CLIENTS),
                   help="http: Gradio's REST route on one keep-alive connection (default); gradio: gradio_client")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-batching", action="store_true", help="each generation runs its own forwards")
    p.add_argument("--compare", action="store_true", help="measure with and without batching, interleaved")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (as app.py's --device)")
    p.add_argument("--dtype", default="fp32", choices=["auto", "bf16", "fp16", "fp32"])
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from tools.serve import serve

    with tempfile.TemporaryDirectory() as tmp:
        if args.model and args.model != "tiny":
            model, label = args.model, Path(args.model).name
        elif args.model is None and (DEFAULT_MODEL / "config.json").exists():
            model, label = DEFAULT_MODEL, "embedded janusflow-shapes"
        else:
            from janusflow_core.testing import make_tiny_model_dir

            model, label = make_tiny_model_dir(Path(tmp) / "tiny"), "tiny random"
        with serve(model, gen_concurrency=max(args.clients), device=args.device, dtype=args.dtype) as (url, engine):
            modes = [True, False] if args.compare else [not args.no_batching]
            print(f"model: {label} · {args.device} {args.dtype} · {torch.get_num_threads()} torch thread(s) · "
                  f"{args.steps} Euler steps, CFG 2, 1 image per request, preview {args.preview} · {args.client} "
                  f"clients · batching "
                  f"{' and '.join('on' if m else 'off' for m in modes)} · {args.rounds} round(s), "
                  f"interleaved\n")
            clients = [CLIENTS[args.client](url) for _ in range(max(args.clients))]
            generator = engine.get().generator
            batcher = generator.batcher
            one_round(clients[:1], 3, args.preview, 0)  # warm-up
            walls: dict = {}
            latencies: dict = {}
            previews: dict = {}
            shared: dict = {}
            for r in range(args.rounds):  # interleaved, so that a change in the machine's load hits all alike
                for batching in modes:
                    generator.batcher = batcher if batching else None
                    for n in args.clients:
                        forwards0, rows0 = batcher.forwards, batcher.batched_rows
                        wall, lat, prev = one_round(clients[:n], args.steps, args.preview, r + 1)
                        key = (batching, n)
                        walls.setdefault(key, []).append(wall)
                        latencies.setdefault(key, []).extend(lat)
                        previews.setdefault(key, []).extend(prev)
                        done = shared.get(key, (0, 0))
                        shared[key] = (done[0] + batcher.forwards - forwards0, done[1] + batcher.batched_rows - rows0)
            generator.batcher = batcher
    rows = []
    for batching in modes:
        solo = (batching, args.clients[0])
        solo_rate = args.clients[0] / statistics.median(walls[solo])
        solo_latency = statistics.median(latencies[solo])
        for n in args.clients:
            key = (batching, n)
            rate = n / statistics.median(walls[key])
            forwards, batched = shared[key]
            rows.append({"batching": batching, "clients": n, "images_per_s": round(rate, 3),
                         "vs_one_client": round(rate / solo_rate, 2),
                         "median_latency_s": round(statistics.median(latencies[key]), 3),
                         "max_latency_s": round(max(latencies[key]), 3),
                         "max_vs_solo": round(max(latencies[key]) / solo_latency, 2),
                         "min_previews": min(previews[key]),
                         "rows_per_forward": round(batched / forwards, 1) if batching and forwards else 2.0})
    print("| batching | clients | images/s | vs 1 client | median latency s | max latency s | max / solo | "
          "min previews | rows per forward |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {'on' if row['batching'] else 'off'} | {row['clients']} | {row['images_per_s']:.2f} | "
              f"{row['vs_one_client']:.2f}x | {row['median_latency_s']:.2f} | {row['max_latency_s']:.2f} | "
              f"{row['max_vs_solo']:.2f}x | {row['min_previews']} | {row['rows_per_forward']:.1f} |")
    if args.out:
        with open(args.out, "a") as f:
            for row in rows:
                f.write(json.dumps({"bench": "serving", "model": label, "threads": torch.get_num_threads(),
                                    "steps": args.steps, "preview": args.preview, "client": args.client,
                                    "rounds": args.rounds, **row,
                                    "device": args.device, "dtype": args.dtype, "load": os.getloadavg()[0],
                                    "cpu": platform.processor() or platform.machine()}) + "\n")
    print("\nimages/s = clients / median wall time of a round (all clients at once, one image each); max / solo = "
          "the slowest request against the median latency of one client alone; min previews = the fewest "
          "distinct previews one request received; rows per forward = the batcher's average.")


if __name__ == "__main__":
    main()
