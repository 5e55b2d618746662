"""Data-parallel training: `synthcheck train` under torchrun with 2 gloo processes on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import _free_port, write_dataset
from synthcheck.training import distributed


def test_shards_are_disjoint_equal_and_cover_the_permutation():
    perm = torch.randperm(103, generator=torch.Generator().manual_seed(0))
    shards = [distributed.shard(perm, distributed.Context(r, 3), 34) for r in range(3)]
    assert [len(s) for s in shards] == [34, 34, 34]
    seen = torch.cat(shards)
    assert len(set(seen.tolist())) == 102  # disjoint; the one left over is dropped, as drop_last does


def test_single_process_is_untouched_by_the_distributed_layer():
    ctx = distributed.from_env()
    assert not ctx.enabled and ctx.main
    t = torch.ones(3)
    assert distributed.all_sum(t, ctx) is t and distributed.from_main([1.5], ctx, torch.device("cpu")) == [1.5]


@pytest.mark.slow
def test_torchrun_two_gloo_processes_converge_on_disjoint_shards(tmp_path):
    data = write_dataset(tmp_path / "data", n_per_class=120, seed=3)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "synthcheck.cli", "train", str(data / "train"), "--test",
           str(data / "test"), "--out", str(out), "--epochs", "6", "--batch-size", "32", "--lr", "0.003", "--quiet"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    card = json.loads((out / "model" / "model_card.json").read_text())
    assert "2 processes (DDP)" in card["hardware"]
    assert card["test_metrics"]["accuracy"] >= 0.9, card["test_metrics"]  # converged
    a, b = np.load(out / "ddp" / "rank0_epoch1.npy"), np.load(out / "ddp" / "rank1_epoch1.npy")
    assert len(a) == len(b) > 0 and not set(a) & set(b)  # the ranks saw disjoint data
    n_train = card["data"]["sizes"]["train"]
    assert len(a) + len(b) >= n_train - 2 * 32  # and together (almost) all of it
    hist = (out / "history.csv").read_text().splitlines()
    assert len(hist) == 1 + 6  # one writer: rank 0


@pytest.mark.slow
def test_torchrun_training_resumes_after_being_killed(tmp_path):
    import signal
    import time

    data = write_dataset(tmp_path / "data", n_per_class=100, seed=4)
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"

    def cmd(*extra):
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port()), "-m", "synthcheck.cli", "train", str(data / "train"), "--out",
                str(out), "--epochs", "8", "--batch-size", "32", "--model", "cnn", "--quiet", *extra]

    proc = subprocess.Popen(cmd(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    hist = out / "history.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if hist.exists() and len(hist.read_text().splitlines()) >= 3 and (out / "last").exists():
            os.killpg(proc.pid, signal.SIGKILL)  # the whole job dies mid-run, as on a preempted machine
            break
        time.sleep(0.05)
    proc.wait(30)
    before = hist.read_text().splitlines()
    assert 3 <= len(before) < 9, "the run was not interrupted mid-way"
    r = subprocess.run(cmd("--resume"), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    after = hist.read_text().splitlines()
    assert len(after) == 9 and after[1:3] == before[1:3]  # finished epochs kept, the rest trained after resume
    assert (out / "model" / "model_card.json").exists()
