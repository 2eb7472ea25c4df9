"""Score against training time: evaluate the EMA snapshots a recipe run exported, and plot the curves.

    python -m janusflow_core.training.report snapshots --work runs/janusflow-shapes [--per-task 6] [--n 60]
    python -m janusflow_core.training.report plot --work runs/janusflow-shapes --out docs/training-curves.png

``snapshots`` appends one line per snapshot to ``WORK/snapshot_scores.jsonl`` (already scored snapshots
are skipped, so it can run while training goes on); ``plot`` draws the loss curves of every stage run
and those scores against minutes of stage training, with Pillow only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

SCORES_FILE = "snapshot_scores.jsonl"


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def snapshot_folders(work: Path) -> list[Path]:
    """Snapshot folders in training order (by stage seconds)."""
    folders = [p for p in (work / "snapshots").glob("*") if (p / "snapshot.json").exists()]
    return sorted(folders, key=lambda p: json.loads((p / "snapshot.json").read_text())["stage_seconds"])


def score_model(folder: Path | str, per_task: int, n: int, seed: int = 0, device: str = "cpu") -> dict:
    """shapes-geneval (``per_task`` prompts per task) and shapes-vqa (``n`` questions) of one exported
    model, as one JSON-ready record."""
    from ..evaluation import benchmarks

    gen = benchmarks.run_geneval(benchmarks.make_generator(str(folder), device, "float32"), per_task=per_task,
                                 seed=seed)
    vqa = benchmarks.run_vqa(benchmarks.make_answerer(str(folder), device, "float32"), n=n, seed=seed)
    return {"geneval": gen["score"]["overall"], "geneval_chance": gen["chance_baseline"]["overall"],
            "geneval_per_task": gen["score"]["per_task"], "vqa": vqa["accuracy"], "vqa_per_form": vqa["per_form"],
            "n_images": len(gen["records"]), "n_questions": n}


def evaluate_snapshots(work: Path, per_task: int = 6, n: int = 60, seed: int = 0, log=print,
                       device: str = "cpu") -> list[dict]:
    out = work / SCORES_FILE
    done = {r["snapshot"] for r in _read_jsonl(out)}
    for folder in snapshot_folders(work):
        if folder.name in done:
            continue
        meta = json.loads((folder / "snapshot.json").read_text())
        rec = {"snapshot": folder.name, **meta, "minutes": round(meta["stage_seconds"] / 60, 2),
               **score_model(folder, per_task, n, seed, device)}
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        log(f"{folder.name}: {rec['minutes']} min, geneval {rec['geneval']:.3f} "
            f"(chance {rec['geneval_chance']:.3f}), vqa {rec['vqa']:.3f}")
    return _read_jsonl(out)


def loss_curves(work: Path, smooth: int = 5) -> dict[str, list[tuple[float, float]]]:
    """(minutes of stage training, loss) per loss term, over the stage runs in order, each point the mean
    of ``smooth`` consecutive log records."""
    curves: dict[str, list[tuple[float, float]]] = {}
    offset = 0.0
    for run in sorted(p for p in work.glob("stage*") if (p / "log.jsonl").exists()):
        recs = _read_jsonl(run / "log.jsonl")
        for i in range(0, len(recs) - smooth + 1, smooth):
            chunk = recs[i:i + smooth]
            minutes = (offset + chunk[-1]["time_s"]) / 60
            for key in ("flow", "ar"):
                vals = [r[key] for r in chunk if key in r]
                if vals:
                    curves.setdefault(key, []).append((minutes, sum(vals) / len(vals)))
        if recs:
            offset += recs[-1]["time_s"]
    return curves


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], series: dict[str, list[tuple[float, float]]],
           colors: dict[str, tuple[int, int, int]], title: str, y_max: float, x_max: float,
           markers: bool = False) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text((x0, y0 - 16), title, fill=(0, 0, 0))
    for k in range(6):  # y grid and labels
        y = y1 - (y1 - y0) * k / 5
        draw.line([(x0, y), (x1, y)], fill=(225, 225, 225))
        draw.text((x0 - 34, y - 6), f"{y_max * k / 5:.2f}", fill=(0, 0, 0))
    step = 10 if x_max > 40 else 5
    for m in range(0, int(x_max) + 1, step):  # x labels
        x = x0 + (x1 - x0) * m / x_max
        draw.text((x - 6, y1 + 4), str(m), fill=(0, 0, 0))
    draw.text(((x0 + x1) // 2 - 60, y1 + 18), "minutes of stage training", fill=(0, 0, 0))

    def xy(p):
        return (x0 + (x1 - x0) * min(p[0], x_max) / x_max, y1 - (y1 - y0) * min(p[1], y_max) / y_max)

    for i, (name, pts) in enumerate(series.items()):
        pts = [xy(p) for p in pts]
        if len(pts) > 1:
            draw.line(pts, fill=colors[name], width=2)
        if markers:
            for x, y in pts:
                draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colors[name])
        draw.line([(x1 - 110, y0 + 12 + 14 * i), (x1 - 90, y0 + 12 + 14 * i)], fill=colors[name], width=3)
        draw.text((x1 - 85, y0 + 6 + 14 * i), name, fill=(0, 0, 0))


def plot(work: Path, out: Path) -> Path:
    curves = loss_curves(work)
    scores = _read_jsonl(work / SCORES_FILE)
    x_max = max([p[0] for c in curves.values() for p in c] + [r["minutes"] for r in scores] + [1.0])
    img = Image.new("RGB", (1000, 380), "white")
    draw = ImageDraw.Draw(img)
    palette = {"flow": (30, 70, 220), "ar": (220, 30, 30), "geneval": (30, 70, 220), "vqa": (30, 160, 60),
               "geneval chance": (160, 160, 160)}
    _panel(draw, (60, 40, 470, 320), {"flow": curves.get("flow", []),
                                      "ar / 4": [(m, v / 4) for m, v in curves.get("ar", [])]},
           {"flow": palette["flow"], "ar / 4": palette["ar"]},
           "training loss (mean of 5 logged batches; the first minutes are off the scale)", 0.3, x_max)
    score_series = {"geneval": [(r["minutes"], r["geneval"]) for r in scores],
                    "geneval chance": [(r["minutes"], r["geneval_chance"]) for r in scores],
                    "vqa": [(r["minutes"], r["vqa"]) for r in scores]}
    _panel(draw, (560, 40, 970, 320), score_series, palette, "score of the EMA snapshots (held-out prompts/scenes)",
           1.0, x_max, markers=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("snapshots", help="score every exported snapshot not scored yet")
    s.add_argument("--work", required=True)
    s.add_argument("--per-task", type=int, default=6)
    s.add_argument("--n", type=int, default=60)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")
    p = sub.add_parser("plot", help="loss and score curves as a PNG")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.command == "snapshots":
        evaluate_snapshots(Path(args.work), args.per_task, args.n, args.seed, device=args.device)
    else:
        print(plot(Path(args.work), Path(args.out)))


if __name__ == "__main__":
    main()
