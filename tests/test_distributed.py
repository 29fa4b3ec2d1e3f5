"""The collectives between torchrun's processes, on CPU with gloo (NCCL needs a GPU per process)."""

import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepfake_cli import distributed
from deepfake_cli.distributed import Ranks


def _rank(rank: int, world: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    device = torch.device("cpu")
    values = distributed.broadcast([float(rank + 1), 10.0 * rank + 0.25], device)  # each rank offers its own
    distributed.barrier(device)
    Path(out, f"{rank}.json").write_text(json.dumps(values))
    dist.destroy_process_group()


def test_every_rank_follows_rank_0s_verdict(tmp_path):
    mp.spawn(_rank, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    assert [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)] == [[1.0, 0.25]] * 2
    assert distributed.broadcast([3.0, 0.5], torch.device("cpu")) == [3.0, 0.5]  # a plain process keeps its own


def test_ranks_come_from_torchruns_environment(monkeypatch):
    assert Ranks.from_env() == Ranks(0, 1, 0) and Ranks().main
    monkeypatch.setenv("RANK", "3"), monkeypatch.setenv("WORLD_SIZE", "4"), monkeypatch.setenv("LOCAL_RANK", "1")
    assert Ranks.from_env() == Ranks(3, 4, 1) and not Ranks.from_env().main
