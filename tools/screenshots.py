"""Make the README screenshots of both tabs in a real (headless) Chromium.

    python -m tools.screenshots [--model DIR] [--out docs]

Uses the embedded model when it exists (else a tiny random model, whose answers and images are noise)
and writes ``screenshot-chat.png`` and ``screenshot-generate.png``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.layout import EXAMPLES_DIR  # noqa: E402
from janusflow_core.bundle import DEFAULT_MODEL  # noqa: E402

from .browser import ask, chromium_page, find_chromium, generate, open_app, set_number  # noqa: E402
from .serve import serve  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description="README screenshots of the app's two tabs")
    p.add_argument("--model", default=None, help="model folder (default: the embedded model, else a tiny random one)")
    p.add_argument("--out", type=Path, default=REPO / "docs")
    args = p.parse_args()
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("Chromium not found: apt-get install chromium (or set $CHROMIUM)")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None and not (DEFAULT_MODEL / "config.json").exists():
            from janusflow_core.testing import make_tiny_model_dir

            print("the embedded model is missing: using a tiny random model")
            model = make_tiny_model_dir(Path(tmp) / "tiny")
        args.out.mkdir(parents=True, exist_ok=True)
        with serve(model) as (url, _), chromium_page(chromium) as page:
            open_app(page, url)
            set_number(page, "max-new-tokens", 48)
            ask(page, "How many triangles are there?", image=EXAMPLES_DIR / "three_triangles.png")
            page.screenshot(path=str(args.out / "screenshot-chat.png"))
            generate(page, "a blue circle and a yellow square", steps=30, num_images=4)
            page.screenshot(path=str(args.out / "screenshot-generate.png"))
    print(f"wrote {args.out / 'screenshot-chat.png'} and {args.out / 'screenshot-generate.png'}")


if __name__ == "__main__":
    main()
