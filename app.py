"""Start the JanusFlow demo: ``python app.py`` serves the embedded shapes model on http://127.0.0.1:7860, and
the OpenAI-compatible API under http://127.0.0.1:7860/v1 (docs/api.md).

The flags are checked first (a model or VAE path that does not exist, a device this machine lacks, a port
out of range or taken), each refusal one ``error:`` line with exit status 2. Then the server comes up at
once and the model loads in the background (the page shows the loading state, or why loading failed).
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys

from janusflow_core.errors import OneLineParser, run_guarded
from janusflow_core.limits import InputError

KEY_ENV = "JANUSFLOW_API_KEY"  # the API key when --api-key is not given (keeps it out of the process list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog="python app.py",
                      description="JanusFlow demo: chat about images and watch generation step by step.")
    p.add_argument("--model", default=None,
                   help="model folder or hub id (default: the embedded shapes model in assets/janusflow-shapes)")
    p.add_argument("--vae", default=None, help="VAE folder or hub id (default: <model>/vae, else stabilityai/sdxl-vae)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--load-8bit", action="store_true", help="LLM linears in 8 bit (CUDA + bitsandbytes)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--concurrency", type=int, default=2,
                   help="chats answered at the same time (the page's and the API's)")
    p.add_argument("--gen-concurrency", type=int, default=8,
                   help="generations run at the same time, the page's and the API's, sharing each model forward "
                        "(more wait in the queue)")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help=f"require 'Authorization: Bearer KEY' on the OpenAI-compatible API under /v1 (default: "
                        f"${KEY_ENV} if set, else the API is open like the page)")
    args = p.parse_args(argv)
    if args.api_key is None:
        args.api_key = os.environ.get(KEY_ENV) or None
    elif not args.api_key.strip():
        p.error("--api-key must not be empty")
    for flag, value in (("--concurrency", args.concurrency), ("--gen-concurrency", args.gen_concurrency)):
        if not 1 <= value <= 64:
            p.error(f"{flag} must be from 1 to 64, got {value}")
    if not 0 <= args.port <= 65535:
        p.error(f"--port must be from 0 to 65535, got {args.port}")
    return args


def check_environment(args: argparse.Namespace) -> None:
    """What can be checked before serving: the model and VAE sources, the device, the port."""
    from janusflow_core.cli import check_device
    from janusflow_core.hub import is_hub_id

    for flag, value in (("--model", args.model), ("--vae", args.vae)):
        if value is None:
            continue
        path = os.path.expanduser(str(value))
        if not os.path.exists(path) and not is_hub_id(str(value)):
            raise InputError(f"{flag} {value!r} is neither an existing folder nor a hub id of the form owner/name")
        if os.path.isfile(path):
            raise InputError(f"{flag} {value!r} is a file; pass the folder that holds config.json and the weights")
    check_device(args.device)
    if args.port:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((args.host if args.host not in ("", "0.0.0.0") else "0.0.0.0", args.port))
            except socket.gaierror:
                raise InputError(f"--host {args.host!r} is not an address of this machine") from None
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise InputError(f"--host {args.host!r} is not an address of this machine") from None
                raise InputError(f"--port {args.port} on {args.host} cannot be used ({exc.strerror}); "
                                 "pick another port or stop what is using it") from None


def serve(args: argparse.Namespace) -> int:
    check_environment(args)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from app import Engine, create_demo, launch  # the package app/, imported after the flags are checked
    from app.openai_api import OpenAIAPI

    engine = Engine(args.model, vae=args.vae, device=args.device, dtype=args.dtype, load_8bit=args.load_8bit,
                    concurrency=args.concurrency, gen_concurrency=args.gen_concurrency)
    demo = create_demo(engine)
    api = OpenAIAPI(engine, api_key=args.api_key)
    _, url, share_url = launch(demo, host=args.host, port=args.port, share=args.share, concurrency=args.concurrency,
                               gen_concurrency=args.gen_concurrency, quiet=True, prevent_thread_lock=True,
                               api=api.router)
    engine.start_loading()
    print(f"JanusFlow demo running on {url}" + (f" (public: {share_url})" if share_url else ""), flush=True)
    print(f"OpenAI-compatible API on {url.rstrip('/')}/v1" + (" (API key required)" if api.api_key else ""),
          flush=True)
    demo.block_thread()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_guarded(lambda: serve(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
