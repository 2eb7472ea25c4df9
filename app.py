"""Start the JanusFlow demo: ``python app.py`` serves the embedded shapes model on http://127.0.0.1:7860.

The server comes up at once; the model loads in the background (the page shows the loading state).
"""

from __future__ import annotations

import argparse
import os


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="JanusFlow demo: chat about images and watch generation step by step.")
    p.add_argument("--model", default=None,
                   help="model folder or hub id (default: the embedded shapes model in assets/janusflow-shapes)")
    p.add_argument("--vae", default=None, help="VAE folder or hub id (default: <model>/vae, else stabilityai/sdxl-vae)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--load-8bit", action="store_true", help="LLM linears in 8 bit (CUDA + bitsandbytes)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--concurrency", type=int, default=2, help="model runs (chats + generations) at the same time")
    args = p.parse_args(argv)
    if args.concurrency < 1:
        p.error("--concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from app import Engine, create_demo, launch  # the package app/, imported after the flags are checked

    engine = Engine(args.model, vae=args.vae, device=args.device, dtype=args.dtype, load_8bit=args.load_8bit)
    demo = create_demo(engine)
    _, url, share_url = launch(demo, host=args.host, port=args.port, share=args.share,
                               concurrency=args.concurrency, quiet=True, prevent_thread_lock=True)
    engine.start_loading()
    print(f"JanusFlow demo running on {url}" + (f" (public: {share_url})" if share_url else ""), flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
