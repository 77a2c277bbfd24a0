"""Non-binary rewards on two processes (gloo on CPU): a group split across processes is divided by the sign of
its advantage from every process's rewards, as one process would divide it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from multiprocess_workers import split_rewards_worker  # noqa: E402


@pytest.mark.distributed
def test_a_split_group_is_divided_by_its_whole_mean(tmp_path):
    rewards = torch.tensor([0.1, 0.9, 0.3, 0.5, 0.7, 0.2, 0.4, 0.6,          # group 0 (rank 0)
                            2.0, 0.0, 0.0, 0.0, 3.0, 3.0, 3.0, 3.0,          # group 1: rank 0 holds 4, rank 1 4
                            0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])         # group 2: alike, nobody correct
    mp.spawn(split_rewards_worker, args=(2, str(tmp_path / "init"), rewards, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    # independent: group 1's mean over both ranks is 14/8, so its 2.0 and its four 3.0s are correct (rank 1's
    # local mean, 3.0, would make its 3.0s incorrect)
    grouped = rewards.double().view(3, 8)
    expected = (grouped > grouped.mean(1, keepdim=True)).view(-1)
    assert torch.equal(torch.cat([r["correct"] for r in ranks]), expected)
    assert torch.equal(ranks[0]["group_correct"][1], expected[8:16])
    assert torch.equal(ranks[1]["group_correct"][1], expected[8:16])
    assert expected[12:16].all() and not expected[16:].any()
