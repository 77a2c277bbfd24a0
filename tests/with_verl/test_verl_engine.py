"""The worker extension on verl's own FSDP2 engine (verl.workers.engine_workers.TrainingWorker), on 1 and 2 gloo
processes: its old-policy log-likelihoods, NTHR selection and advantages equal the project's single-process
scoring of the same batch, and its logp_after equals an independent re-score of the updated weights."""

from __future__ import annotations

import socket

import pytest
import torch

from needs_verl import require_verl

require_verl()

import torch.multiprocessing as mp  # noqa: E402

from engine_harness import (GROUP_SIZE, MINI_BATCHES, TEMPERATURE, grpo_token_advantages, make_batch,  # noqa: E402
                            run_rank)
from lld_probe.integrations.verl.layout import sequence_advantages, to_response_width, token_lists  # noqa: E402
from lld_probe.models import load_model  # noqa: E402
from lld_probe.probes import ProbeRecorder, ProbeSettings  # noqa: E402
from lld_probe.scoring import output_embedding_weight, score_group  # noqa: E402
from lld_probe.store.run_store import read_run_store  # noqa: E402

pytestmark = pytest.mark.verl


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reference(method: str, folder):
    """The project's own single-process scoring of the batch (plain transformers model, packed scoring)."""
    batch = make_batch()
    rewards = batch["rewards"]
    advantages = grpo_token_advantages(rewards, batch["response_mask"])
    prompt_ids, completion_ids = token_lists(batch["prompts"], batch["responses"], batch["attention_mask"],
                                             batch["response_mask"])
    model, _ = load_model("tiny")
    recorder = ProbeRecorder(ProbeSettings(method=method, nthr_beta=1.0, probe_set_size=0, seed=3), folder,
                             temperature=TEMPERATURE, pad_id=0)
    generation = recorder.begin_batch(1, prompt_ids, completion_ids, rewards=rewards, deciding_rewards=rewards,
                                      advantages=sequence_advantages(advantages, batch["response_mask"]),
                                      group_size=GROUP_SIZE, prompts=[""] * len(rewards),
                                      completions=[""] * len(rewards), question_ids=["q"] * len(rewards))
    scored = score_group(model, generation.batch, temperature=TEMPERATURE, with_hidden=True, with_entropy=True)
    probed = recorder.score_old_policy(generation, scored.token_logps, scored.entropy, scored.hidden,
                                       output_embedding_weight(model))
    return model, generation, probed, to_response_width(probed.loss_advantages, batch["response_mask"])


def _run(world_size: int, method: str, folder):
    mp.spawn(run_rank, args=(world_size, _free_port(), str(folder), method), nprocs=world_size, join=True)
    store = read_run_store(folder / "store")
    advantages = torch.cat([torch.load(folder / f"rank{r}.pt")["advantages"] for r in range(world_size)])
    return store, advantages, torch.load(folder / "weights.pt")


@pytest.mark.parametrize("world_size, method", [
    pytest.param(1, "nthr", id="1proc-nthr"),
    pytest.param(2, "nthr", id="2proc-nthr", marks=pytest.mark.distributed),
    pytest.param(2, "random", id="2proc-random", marks=pytest.mark.distributed),
])
def test_engine_probes_equal_single_process_scoring(tmp_path, world_size, method):
    store, advantages, weights = _run(world_size, method, tmp_path / "verl")
    model, generation, probed, expected_advantages = _reference(method, tmp_path / "reference")
    responses = store.responses.sort_values(["group_id", "response_index"], key=lambda c: c.map(
        lambda v: tuple(map(int, v.split(":"))) if isinstance(v, str) else v)).reset_index(drop=True)
    assert store.meta["world_size"] == world_size and len(responses) == generation.size
    assert (responses["window_steps"] == MINI_BATCHES).all()      # the optimizer steps the driver said
    # 12 rows in groups of 4 over 2 processes: group 1 straddles the two (the split-group path)
    assert responses["group_id"].tolist() == [f"1:{row // GROUP_SIZE}" for row in range(generation.size)]
    before = torch.tensor(responses["logp_before"].to_numpy())
    assert torch.allclose(before, probed.old.logp_before.double(), atol=1e-4, rtol=0)
    tokens = store.tokens
    mask = generation.batch.mask
    # token rows in the reference's row order: (group, response index) -> row
    row_of = {(g, i): g * GROUP_SIZE + i for g in range(generation.size // GROUP_SIZE) for i in range(GROUP_SIZE)}
    selected = torch.zeros_like(mask)
    for group_id, index, position, flag in zip(tokens["group_id"], tokens["response_index"], tokens["position"],
                                               tokens["nthr_selected"]):
        selected[row_of[(int(group_id.split(":")[1]), int(index))], int(position)] = bool(flag)
    assert probed.old.nthr_selected.any(), "the batch must exercise NTHR's selection"
    assert torch.equal(selected, probed.old.nthr_selected)
    assert torch.allclose(advantages, expected_advantages, atol=1e-5, rtol=0)
    # logp_after: the updated weights gathered from the engine, re-scored independently
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and all("lm_head" in name for name in missing)
    after = score_group(model, generation.batch, temperature=TEMPERATURE, layout="rows").token_logps
    expected_after = (after * mask).sum(1).double()
    measured_after = torch.tensor(responses["logp_after"].to_numpy())
    assert not torch.allclose(measured_after, before, atol=1e-3), "the update must move the likelihoods"
    assert torch.allclose(measured_after, expected_after, atol=1e-4, rtol=0)
    assert {"lld/rate", "lld/delta_correct"} <= set(store.scalars["name"])
    # what each rank hands the driver for the rollout dump (its rows, in rank order): the store's values
    handed = [torch.load(tmp_path / "verl" / f"rank{r}.pt")["step_rows"] for r in range(world_size)]
    for key in ("logp_before", "logp_after"):
        assert sum((rank[key] for rank in handed), []) == responses[key].tolist()
