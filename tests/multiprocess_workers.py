"""Workers for tests/test_multiprocess.py, run in real processes (torch.multiprocessing, gloo on CPU)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def split_group_worker(rank: int, world_size: int, store_file: str, cases: list, out_dir: str) -> None:
    """Each case: (name, tensors of one group, the rows each rank holds, NTHR settings). This rank scores its
    rows with score_split_groups and saves what it computed."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world_size)
    from lld_probe.probes import TorchDistributed
    from lld_probe.probes.old_policy import score_split_groups
    comm = TorchDistributed()
    results = {}
    for name, group, bounds, settings in cases:
        rows = slice(bounds[rank], bounds[rank + 1])
        holders = tuple(r for r in range(world_size) if bounds[r + 1] > bounds[r])
        pieces = {0: rows} if rows.stop > rows.start else {}
        split = score_split_groups(pieces, {0: holders}, group["tokens"], group["mask"], group["correct"],
                                   group["token_logps"], group["hidden"], group["unembed"], comm=comm, **settings)
        if pieces:
            results[name] = {"rows": rows, "scores": split.scores[rows], "anchors": split.anchors[rows],
                             "selected": split.selected[rows], "tau": split.taus[0]}
    results["traffic"] = dict(comm.traffic)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def split_rewards_worker(rank: int, world_size: int, store_file: str, rewards: torch.Tensor, out_dir: str) -> None:
    """This rank's rows of one generation batch (G = 8, 12 rows a rank: group 1 split 4/4) through
    begin_batch with every rank's non-binary rewards; saves the correctness it got."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world_size)
    from lld_probe.probes import ProbeRecorder, ProbeSettings, TorchDistributed
    recorder = ProbeRecorder(ProbeSettings(probe_set_size=0), os.path.join(out_dir, "store"), temperature=1.0,
                             pad_id=0, comm=TorchDistributed())
    rows = range(rank * 12, (rank + 1) * 12)
    generation = recorder.begin_batch(1, [[1, 2]] * 12, [[3, 4]] * 12, rewards=rewards[rank * 12:(rank + 1) * 12],
                                      deciding_rewards=rewards, advantages=torch.zeros(12), group_size=8,
                                      prompts=[f"q{row // 8}" for row in rows], completions=["x"] * 12,
                                      question_ids=[str(row // 8) for row in rows])
    torch.save({"correct": generation.correct, "group_correct": generation.group_correct},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
