"""The fine-tuning command under ``accelerate launch`` with two CPU processes (gloo): each process draws its own
samples, every replica ends with the same weights, and the exported OUT loads. Run directly under the
launcher, this file is the worker: it runs the command and saves its replica's weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def worker(base: str, gen: str, und: str, out: str, dumps: str) -> None:
    from janusflow_core import finetune
    from janusflow_core.training import trainer as trainer_module

    original = trainer_module.Trainer.train

    def train_and_dump(self, resume=True, stop_at=None):
        result = original(self, resume, stop_at)
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        torch.save({"state": state, "world": self.acc.num_processes, "used": self.batcher.state_dict()["used"],
                    "first_gen_index": self.batcher.first_index}, Path(dumps) / f"rank{self.acc.process_index}.pt")
        return result

    trainer_module.Trainer.train = train_and_dump
    from janusflow_core.training import finetune_data

    original_next = finetune_data.DataMix._next

    def remember_first(self, kind):  # the dataset indices of the first generation batch of this process
        batch = original_next(self, kind)
        if kind == "gen" and not hasattr(self, "first_index"):
            self.first_index = batch["index"].tolist()
        return batch

    finetune_data.DataMix._next = remember_first
    finetune.main(["--model", base, "--out", out, "--gen-data", gen, "--und-data", und, "--steps", "3",
                   "--batch-size", "4", "--workers", "1", "--lr", "1e-2", "--quiet", "--checkpoint-every", "2"])


def test_two_process_finetune_keeps_replicas_identical_and_out_loads(tmp_path):
    from janusflow_core import load_pretrained
    from janusflow_core.testing import make_tiny_model_dir
    from tests.test_finetune import write_data

    base = make_tiny_model_dir(tmp_path / "base")
    gen, und = write_data(tmp_path / "data", n=16)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", __file__,
           str(base), str(gen), str(und), str(tmp_path / "out"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    # 3 steps x (3 generation + 1 understanding samples: the default ratio 0.75 of a batch of 4), per process
    assert r0["used"] == r1["used"] == {"gen": 9, "und": 3}
    assert set(r0["first_gen_index"]).isdisjoint(r1["first_gen_index"])  # each process has its own shard
    lora = [k for k in r0["state"] if "lora_" in k]
    assert lora  # the replicas are peft-wrapped models
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert any(not torch.all(r0["state"][k] == 0) for k in lora if "lora_B" in k)  # and they trained
    bundle = load_pretrained(tmp_path / "out", device="cpu")
    assert bundle.model.config.num_gen_tokens > 0
    assert "processes" in (tmp_path / "out" / "finetune.json").read_text()


if __name__ == "__main__":
    worker(*sys.argv[1:6])
