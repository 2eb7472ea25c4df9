"""The two data formats users bring for fine-tuning, read with every bad record named by file and line.

Generation (text-to-image): an image folder in the ``imagefolder`` convention of the datasets library,
``DIR/metadata.jsonl`` with one line per image, ``{"file_name": "relative/path.png", "text": "caption"}``.
Understanding: a ``.json`` list or ``.jsonl`` file in LLaVA's conversation format (see
:mod:`janusflow_core.training.finetune_data` for the rules and how both are trained on). These readers
only parse and check structure; they sit below training and evaluation, which both read these files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

METADATA = "metadata.jsonl"
IMAGE_TAG = "<image>"
HUMAN, GPT = ("human", "user"), ("gpt", "assistant")


@dataclass(frozen=True)
class GenRecord:
    image: Path
    text: str
    where: str  # "path/metadata.jsonl:LINE"


@dataclass(frozen=True)
class UndRecord:
    image: Path | None
    turns: tuple[tuple[str, str], ...]  # (question, answer) pairs; the first question without "<image>"
    where: str


class DataProblems(ValueError):
    """The data did not pass the checks; ``problems`` lists every one found (file:line: what is wrong)."""

    def __init__(self, problems: list[str], shown: int = 10):
        self.problems = problems
        more = f"\n  ... and {len(problems) - shown} more" if len(problems) > shown else ""
        super().__init__(f"{len(problems)} problem(s) in the training data (fix them, or pass --skip-bad to "
                         "leave those records out):\n  " + "\n  ".join(problems[:shown]) + more)


# -- reading ------------------------------------------------------------------------------------------

def _json_lines(path: Path, problems: list[str]) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) of every non-blank line; a bad line becomes a problem."""
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})")


def read_gen_folder(folder: str | Path) -> tuple[list[GenRecord], list[str]]:
    """The records of an image folder's ``metadata.jsonl`` and the structural problems found."""
    folder = Path(folder)
    meta = folder / METADATA
    if not meta.is_file():
        return [], [f"{folder}: no {METADATA} (a generation folder holds one line per image: "
                    '{"file_name": "relative/path.png", "text": "caption"})']
    records, problems = [], []
    for n, rec in _json_lines(meta, problems):
        where = f"{meta}:{n}"
        if not isinstance(rec, dict):
            problems.append(f"{where}: a line must be a JSON object with file_name and text, got {type(rec).__name__}")
            continue
        name, text = rec.get("file_name"), rec.get("text")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: file_name must be a non-empty string (the image path relative to {folder})")
            continue
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where}: empty caption (text must be a non-empty string)")
            continue
        records.append(GenRecord(folder / name, text.strip(), where))
    return records, problems


def _und_record(rec: object, base: Path, where: str) -> tuple[UndRecord | None, str | None]:
    if not isinstance(rec, dict):
        return None, f"{where}: a record must be a JSON object with conversations, got {type(rec).__name__}"
    convs = rec.get("conversations")
    if not isinstance(convs, list) or not convs:
        return None, f"{where}: conversations must be a non-empty list of {{'from', 'value'}} turns"
    if len(convs) % 2:
        return None, f"{where}: {len(convs)} turns; turns go in human/gpt pairs, ending with gpt"
    texts = []
    for k, turn in enumerate(convs):
        want = HUMAN if k % 2 == 0 else GPT
        if not isinstance(turn, dict) or turn.get("from") not in want:
            got = turn.get("from") if isinstance(turn, dict) else type(turn).__name__
            return None, f"{where}: turn {k} is from {got!r}; turns alternate {'/'.join(HUMAN)} and {'/'.join(GPT)}, " \
                         "starting with human"
        value = turn.get("value")
        if not isinstance(value, str) or not value.strip():
            return None, f"{where}: turn {k} has an empty value"
        texts.append(value.strip())
    image = rec.get("image")
    if image is not None and (not isinstance(image, str) or not image):
        return None, f"{where}: image must be one relative path (a string), got {image!r}"
    tags = [t.count(IMAGE_TAG) for t in texts]
    if image is None and any(tags):
        return None, f"{where}: {IMAGE_TAG} in the text but the record has no image"
    if sum(tags) > 1 or any(tags[1:]):
        return None, f"{where}: {IMAGE_TAG} may appear once, in the first human turn (one image per record)"
    first = texts[0].replace(IMAGE_TAG, "").strip()
    if not first:
        return None, f"{where}: the first human turn has no text besides {IMAGE_TAG}"
    texts[0] = first
    turns = tuple((texts[i], texts[i + 1]) for i in range(0, len(texts), 2))
    return UndRecord(base / image if image else None, turns, where), None


def read_und_file(path: str | Path) -> tuple[list[UndRecord], list[str]]:
    """The records of a LLaVA ``.json`` (a list) or ``.jsonl`` file and the structural problems found."""
    path = Path(path)
    if path.suffix not in (".json", ".jsonl"):
        return [], [f"{path}: understanding data must be a .json (a list of records) or .jsonl file"]
    if not path.is_file():
        return [], [f"{path}: no such file"]
    problems: list[str] = []
    if path.suffix == ".jsonl":
        items = list(_json_lines(path, problems))
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            return [], [f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})"]
        if not isinstance(data, list):
            return [], [f"{path}: a .json file must hold a list of records, got {type(data).__name__}"]
        items = [(f"record {i}", rec) for i, rec in enumerate(data)]  # a .json list has no line per record
    records = []
    for n, rec in items:
        r, problem = _und_record(rec, path.parent, f"{path}:{n}")
        if problem:
            problems.append(problem)
        else:
            records.append(r)
    return records, problems


def open_rgb(path: Path) -> Image.Image:
    """An image file as RGB, transparent pixels composited over white."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P") and (im.mode != "P" or "transparency" in im.info):
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return im.convert("RGB")
