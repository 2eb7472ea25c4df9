"""User data for fine-tuning: two standard formats, read and checked in full before the first step.

Generation (text-to-image) -- an image folder in the ``imagefolder`` convention of the datasets library:
``DIR/metadata.jsonl`` with one line per image, ``{"file_name": "relative/path.png", "text": "caption"}``
(other keys are ignored). Every image is converted to RGB (transparent pixels over white), its shorter side
resized to the generation resolution (``gen_latent_size`` x the VAE's downsampling; bicubic) and the middle
square cropped, then encoded by the VAE each time it is drawn.

Understanding -- a ``.json`` list or a ``.jsonl`` file in LLaVA's conversation format:
``{"image": "relative/path.png", "conversations": [{"from": "human", "value": "<image>\\nQuestion?"},
{"from": "gpt", "value": "Answer."}, ...]}``. Image paths are relative to the file's folder; turns alternate
human / gpt (``user`` / ``assistant`` are accepted too), start with human and end with gpt; ``<image>`` may
appear once, in the first human turn (when it is missing the image goes before that turn's text, as LLaVA
does); a record without ``"image"`` is text-only. The loss is on the gpt turns only; the conversation is
rendered in the base model's chat template (system text included), so the fine-tuned model keeps it.

``read_gen_folder`` / ``read_und_file`` parse and check the structure; ``check_records`` opens every image
and measures every record against the context. Each problem names the file and line. ``DataMix`` is the
trainer's batch source: one DataLoader (with workers) per kind, ``n_gen`` + ``n_und`` samples per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data_formats import (  # noqa: F401  (re-exported: the fine-tuning module reads them from here)
    GPT,
    HUMAN,
    IMAGE_TAG,
    METADATA,
    DataProblems,
    GenRecord,
    UndRecord,
    open_rgb,
    read_gen_folder,
    read_und_file,
)
from ..processing.image import center_square, vae_pixels
from ..processing.processor import JanusFlowProcessor
from .data import answer_ids, conversation_ids, first_turn_ids, next_turn_ids
from .losses import drop_prompts, sample_logit_normal

# -- checking -----------------------------------------------------------------------------------------

def _image_problem(path: Path, where: str) -> str | None:
    if not path.is_file():
        return f"{where}: image {path} does not exist"
    try:
        with Image.open(path) as im:
            im.load()
            if min(im.size) < 1:
                return f"{where}: image {path} is empty"
    except Exception as e:  # noqa: BLE001 -- Pillow raises many types for a damaged file
        return f"{where}: image {path} cannot be read ({type(e).__name__}: {e})"
    return None


class Tokens:
    """Token ids of the records in the processor's template (pieces cached: captions and questions repeat)."""

    def __init__(self, processor: JanusFlowProcessor):
        self.processor = processor
        self._cache: dict[tuple, object] = {}

    def _cached(self, key: tuple, make: Callable):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def gen(self, text: str) -> list[int]:
        return self._cached(("gen", text), lambda: self.processor.encode_generation_prompt(text).tolist())

    def und(self, rec: UndRecord) -> tuple[list[int], list[bool], list[int]]:
        p = self.processor
        return conversation_ids(
            list(rec.turns), rec.image is not None,
            lambda q, img: self._cached(("first", q, img), lambda: first_turn_ids(p, q, img)),
            lambda q: self._cached(("next", q), lambda: next_turn_ids(p, q)),
            lambda a: self._cached(("answer", a), lambda: answer_ids(p, a)))


def check_records(gen: Sequence[GenRecord], und: Sequence[UndRecord], tokens: Tokens, max_seq_len: int,
                  num_gen_tokens: int) -> tuple[list[GenRecord], list[UndRecord], list[str]]:
    """Open every image and measure every record: (good generation records, good understanding records,
    problems). A generation record needs prompt + t + ``num_gen_tokens`` positions within ``max_seq_len``."""
    problems: list[str] = []
    good_gen, good_und = [], []
    for r in gen:
        problem = _image_problem(r.image, r.where)
        if problem is None:
            n = len(tokens.gen(r.text)) + 1 + num_gen_tokens
            if n > max_seq_len:
                problem = (f"{r.where}: the caption makes {n} positions with the image tokens, more than the "
                           f"context of {max_seq_len}")
        problems.append(problem) if problem else good_gen.append(r)
    for r in und:
        problem = _image_problem(r.image, r.where) if r.image is not None else None
        if problem is None:
            n = len(tokens.und(r)[0])
            if n > max_seq_len:
                problem = (f"{r.where}: the conversation is {n} tokens with its image, more than the context "
                           f"of {max_seq_len}")
        problems.append(problem) if problem else good_und.append(r)
    return good_gen, good_und, problems


# -- datasets -----------------------------------------------------------------------------------------

class GenerationDataset(Dataset):
    """Item: prompt ids, the image at generation resolution as VAE input in [-1, 1] (3, S, S), and the
    image as the understanding encoder sees it (REPA target input, (3, s, s))."""

    def __init__(self, records: Sequence[GenRecord], tokens: Tokens, size: int):
        self.records = list(records)
        self.ids = [tokens.gen(r.text) for r in self.records]
        self.image_processor = tokens.processor.image_processor
        self.size = size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        image = center_square(open_rgb(self.records[i].image), self.size)
        x = vae_pixels(image)  # (3, S, S)
        return {"ids": self.ids[i], "pixels": x, "und_pixels": self.image_processor([image])[0], "index": i}


class UnderstandingDataset(Dataset):
    """Item: ids, image-position mask, labels and (for records with an image) pixel values (3, s, s)."""

    def __init__(self, records: Sequence[UndRecord], tokens: Tokens):
        self.records = list(records)
        self.rows = [tokens.und(r) for r in self.records]
        self.image_processor = tokens.processor.image_processor

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        pixels = self.image_processor([open_rgb(rec.image)])[0] if rec.image is not None else None
        ids, seq_mask, labels = self.rows[i]
        return {"ids": ids, "seq_mask": seq_mask, "labels": labels, "pixels": pixels}


def _left_pad(rows: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), value, dtype=torch.long)
    mask = torch.zeros(len(rows), t, dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, t - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[k, t - len(r):] = 1
    return ids, mask


class CollateGen:
    def __init__(self, pad: int):
        self.pad = pad

    def __call__(self, items: list[dict]) -> dict:
        ids, mask = _left_pad([it["ids"] for it in items], self.pad)
        return {"prompt_ids": ids, "position_mask": mask, "pixels": torch.stack([it["pixels"] for it in items]),
                "und_pixels": torch.stack([it["und_pixels"] for it in items]),
                "index": torch.tensor([it["index"] for it in items])}


class CollateUnd:
    """Left-padded rows in the trainer's ``lm`` format (one image slot per row, zeros when text-only)."""

    def __init__(self, pad: int, num_image_tokens: int, image_size: int):
        self.pad, self.n, self.size = pad, num_image_tokens, image_size

    def __call__(self, items: list[dict]) -> dict:
        input_ids, attention_mask = _left_pad([it["ids"] for it in items], self.pad)
        b, t = input_ids.shape
        labels = torch.full((b, t), -100, dtype=torch.long)
        seq_mask = torch.zeros(b, t, dtype=torch.bool)
        emb_mask = torch.zeros(b, 1, self.n + 1, dtype=torch.bool)
        pixel_values = torch.zeros(b, 1, 3, self.size, self.size)
        for k, it in enumerate(items):
            s = t - len(it["ids"])
            labels[k, s:] = torch.tensor(it["labels"], dtype=torch.long)
            seq_mask[k, s:] = torch.tensor(it["seq_mask"], dtype=torch.bool)
            if it["pixels"] is not None:
                emb_mask[k, 0] = True
                pixel_values[k, 0] = it["pixels"]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                "images_seq_mask": seq_mask, "images_emb_mask": emb_mask, "pixel_values": pixel_values}


class ShardSampler(Sampler[int]):
    """An endless stream of dataset indices for one process: epoch e is a permutation seeded by
    (seed, e), split over the processes (process k takes positions k, k + world, ...). ``start`` skips the
    first ``start`` indices of this process's stream, which is how a resumed run continues exactly."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        if n < 1:
            raise ValueError("ShardSampler needs a non-empty dataset")
        self.n, self.seed, self.rank, self.world, self.start = n, seed, rank, world, start

    def __iter__(self) -> Iterator[int]:
        epoch, skip = 0, self.start
        while True:
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            mine = perm[self.rank::self.world].tolist() or perm[:1].tolist()  # (more processes than samples)
            if skip >= len(mine):
                skip -= len(mine)
            else:
                yield from mine[skip:]
                skip = 0
            epoch += 1


class DataMix:
    """The trainer's batch source over user data: ``n_gen`` generation and ``n_und`` understanding samples per
    batch and process. Generation images are VAE-encoded here (on the VAE's device); CFG prompt dropping, the
    noise and the logit-normal t are drawn from this object's generator, so ``state_dict`` (samples used per
    kind and that generator) resumes a run exactly. REPA targets are cached per image (``pool_index``) when
    ``cache_repa`` is set; the trainer only uses the cache while the understanding encoder is frozen."""

    def __init__(self, gen: GenerationDataset | None, und: UnderstandingDataset | None, n_gen: int, n_und: int,
                 processor: JanusFlowProcessor, vae, seed: int, rank: int = 0, world: int = 1, workers: int = 0,
                 cfg_drop: float = 0.1, t_mean: float = 0.0, t_std: float = 1.0, cache_repa: bool = False):
        if n_gen and gen is None or n_und and und is None:
            raise ValueError("DataMix: samples of a kind requested without a dataset of that kind")
        self.gen, self.und = (gen if n_gen else None), (und if n_und else None)
        self.n_gen, self.n_und = n_gen, n_und
        self.vae, self.seed, self.rank, self.world, self.workers = vae, seed, rank, world, workers
        self.cfg_drop, self.t_mean, self.t_std, self.cache_repa = cfg_drop, t_mean, t_std, cache_repa
        st = processor.special_tokens
        self.collate_gen = CollateGen(st.pad)
        self.collate_und = CollateUnd(st.pad, processor.num_image_tokens, processor.image_processor.image_size)
        self.rng = torch.Generator().manual_seed(seed * 1000 + rank)
        self.used = {"gen": 0, "und": 0}  # samples taken so far, per kind
        self._iters: dict[str, Iterator] = {}

    @property
    def has_gen(self) -> bool:
        return self.gen is not None

    @property
    def has_und(self) -> bool:
        return self.und is not None

    def _loader(self, kind: str) -> Iterator:
        ds, n, collate = ((self.gen, self.n_gen, self.collate_gen) if kind == "gen"
                          else (self.und, self.n_und, self.collate_und))
        sampler = ShardSampler(len(ds), self.seed * 2 + (kind == "und"), self.rank, self.world, self.used[kind])
        return iter(DataLoader(ds, batch_size=n, sampler=sampler, num_workers=self.workers, collate_fn=collate,
                               persistent_workers=self.workers > 0))

    def _next(self, kind: str) -> dict:
        if kind not in self._iters:
            self._iters[kind] = self._loader(kind)
        batch = next(self._iters[kind])
        self.used[kind] += self.n_gen if kind == "gen" else self.n_und
        return batch

    def state_dict(self) -> dict:
        return {"used": dict(self.used), "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.used = dict(state["used"])
        self.rng.set_state(state["rng"])
        self._iters = {}  # rebuilt from the new positions at the next batch

    def gen_batch(self) -> dict | None:
        if self.gen is None:
            return None
        b = self._next("gen")
        latents = self.vae.encode(b["pixels"]).float().cpu()  # (n, C, h, w) scaled latents
        mask = b["position_mask"]
        dropped, _ = drop_prompts(mask, self.cfg_drop, self.rng)
        out = {"prompt_ids": b["prompt_ids"], "prompt_mask": dropped, "position_mask": mask, "latents": latents,
               "noise": torch.randn(latents.shape, generator=self.rng),
               "t": sample_logit_normal(latents.shape[0], self.t_mean, self.t_std, generator=self.rng),
               "pixel_values": b["und_pixels"]}
        if self.cache_repa:
            out["pool_index"] = b["index"]
        return out

    def next_batch(self, num_gen_tokens: int) -> dict:
        return {"lm": self._next("und") if self.und is not None else None, "gen": self.gen_batch()}
