"""Data-parallel training: two CPU processes (gloo) launched by ``accelerate launch --multi_gpu``
(torchrun underneath; on a machine without CUDA the trainer asks accelerate for CPU processes) train a
few steps and must end with identical replicas. Run directly under the launcher, this file is the worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def worker(out: Path) -> None:
    from helpers_training import tiny_setup

    from janusflow_core.training import TrainConfig
    from janusflow_core.training.trainer import Trainer, make_accelerator

    cfg = TrainConfig(stage=3, steps=3, batch_und=2, batch_gen=2, batch_text=1, max_seq_len=256, lr=3e-3,
                      warmup_steps=1, repa_layer=1, checkpoint_every=2, log_every=1,
                      time_limit_s=3600)  # exercises the cross-process stop decision
    acc = make_accelerator(cfg)
    rank = acc.process_index
    setup = tiny_setup(out / f"setup{rank}")
    model = setup.model(seed=rank)  # different on purpose: DDP must start every replica from rank 0's weights
    tr = Trainer(model, setup.processor, cfg, out / "run", setup.und_pool, setup.gen_pool, accelerator=acc,
                 progress=False)
    first = tr.batcher.state_dict()["rng"]
    tr.train(resume=False)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"state": state, "ema": tr.ema, "world": acc.num_processes, "first_rng": first,
                "repa": tr.repa_head.state_dict()}, out / f"rank{rank}.pt")


def test_two_process_ddp_keeps_replicas_identical(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", __file__, str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["first_rng"] != r1["first_rng"]  # each process draws its own samples
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    for k in r0["ema"]:
        assert torch.equal(r0["ema"][k], r1["ema"][k]), k
    for k in r0["repa"]:
        assert torch.equal(r0["repa"][k], r1["repa"][k]), k
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").exists()
    assert (tmp_path / "run" / "checkpoint" / "rng_state_1.pt").exists()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
