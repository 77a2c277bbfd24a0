"""The trainer extension's step (LLDRayPPOTrainer._update_actor -> ProbeStep -> verl's own
RayPPOTrainer._update_actor) against a stand-in worker group that scores with the project's single-process
recorder: rows scattered as trainer.balance_batch leaves them are scored in group order, the method's
advantages land on the right rows of verl's batch, verl's update sees them, and the lld/ metrics join the
actor's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from needs_verl import require_verl

require_verl()

from omegaconf import OmegaConf  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from verl import DataProto  # noqa: E402

from engine_harness import GROUP_SIZE, TEMPERATURE, grpo_token_advantages, make_batch  # noqa: E402
from lld_probe.integrations.verl.engine_probes import ADVANTAGES_KEY, GROUP_SIZE_KEY, REWARD_KEY  # noqa: E402
from lld_probe.integrations.verl.layout import sequence_advantages, to_response_width, token_lists  # noqa: E402
from lld_probe.integrations.verl.step import ProbeStep, group_order  # noqa: E402
from lld_probe.integrations.verl.trainer import LLDRayPPOTrainer  # noqa: E402
from lld_probe.models import load_model  # noqa: E402
from lld_probe.probes import ProbeRecorder, ProbeSettings  # noqa: E402
from lld_probe.scoring import output_embedding_weight, score_group  # noqa: E402

pytestmark = pytest.mark.verl


class StandInWorkers:
    """The actor worker group's calls, on one process with the plain tiny model."""

    def __init__(self, folder, method):
        self.model, _ = load_model("tiny")
        self.recorder = ProbeRecorder(ProbeSettings(method=method, probe_set_size=0, seed=3), folder,
                                      temperature=TEMPERATURE, pad_id=0)
        self.calls, self.scored_prompts, self.updated_advantages, self.finish_scalars = [], None, None, None

    def lld_score_old_policy(self, data):
        self.calls.append("score")
        from verl.utils import tensordict_utils as tu
        prompt_ids, completion_ids = token_lists(data["prompts"], data["responses"], data["attention_mask"],
                                                 data["response_mask"])
        self.scored_prompts = prompt_ids
        rewards = data[REWARD_KEY]
        generation = self.recorder.begin_batch(
            1, prompt_ids, completion_ids, rewards=rewards, deciding_rewards=rewards,
            advantages=sequence_advantages(data["advantages"], data["response_mask"]),
            group_size=int(tu.get(data, GROUP_SIZE_KEY)), prompts=[str(p) for p in prompt_ids],
            completions=[""] * len(rewards), question_ids=[str(p) for p in prompt_ids])
        scored = score_group(self.model, generation.batch, with_hidden=True, with_entropy=True)
        probed = self.recorder.score_old_policy(generation, scored.token_logps, scored.entropy, scored.hidden,
                                                output_embedding_weight(self.model))
        advantages = to_response_width(probed.loss_advantages, data["response_mask"])
        return TensorDict({ADVANTAGES_KEY: advantages}, batch_size=[len(advantages)])

    def update_actor(self, data):
        self.calls.append("update")
        self.updated_advantages = data["advantages"].clone()
        return TensorDict({}, batch_size=[]).set_non_tensor("metrics", {"pg_loss": [0.5, 0.25], "mfu": 0.1})

    def lld_finish_step(self, scalars):
        self.calls.append("finish")
        self.finish_scalars = scalars
        return [{"lld/rate": 0.5}, {"lld/rate": 0.5}]       # one per rank, identical


def _config():
    return OmegaConf.create({
        "actor_rollout_ref": {"rollout": {"n": GROUP_SIZE, "temperature": TEMPERATURE, "multi_turn": {"enable": False}},
                              "actor": {"calculate_entropy": False, "entropy_coeff": 0.0, "ppo_mini_batch_size": 3,
                                        "ppo_epochs": 1, "data_loader_seed": 1, "shuffle": False}}})


def _scattered_batch(permutation):
    """verl's batch after compute_advantage, its rows reordered as balance_batch would."""
    batch = make_batch()
    rewards = batch.pop("rewards")
    scores = torch.zeros(batch["response_mask"].shape)
    scores[torch.arange(len(rewards)), batch["response_mask"].sum(1) - 1] = rewards
    advantages = grpo_token_advantages(rewards, batch["response_mask"])
    uids = np.array([f"u{row // GROUP_SIZE}" for row in range(len(rewards))], dtype=object)
    proto = DataProto.from_single_dict({**batch, "token_level_scores": scores, "advantages": advantages, "uid": uids},
                                       meta_info={"temperature": TEMPERATURE,
                                                  "global_token_num": batch["attention_mask"].sum(-1).tolist()})
    proto.reorder(permutation)
    return proto


@pytest.mark.parametrize("method", ["nthr", "pos_only"])
def test_trainer_step_scores_in_group_order_and_writes_back(tmp_path, method):
    permutation = torch.tensor([5, 0, 11, 3, 8, 1, 6, 10, 2, 9, 4, 7])
    batch = _scattered_batch(permutation)
    trainer = object.__new__(LLDRayPPOTrainer)           # no Ray: the fields _update_actor reads
    workers = StandInWorkers(tmp_path / "store", method)
    trainer.config, trainer.actor_rollout_wg, trainer.global_steps = _config(), workers, 1
    trainer.lld_step = ProbeStep(workers, group_size=GROUP_SIZE)
    output = trainer._update_actor(batch)
    assert workers.calls == ["score", "update", "finish"]
    # scored in group order: every group's rows share one prompt
    prompts = workers.scored_prompts
    assert all(prompts[g * GROUP_SIZE] == prompts[g * GROUP_SIZE + i] for g in range(3) for i in range(GROUP_SIZE))
    # the advantages verl's update saw: the stand-in's, row by row in verl's (scattered) order
    reference = StandInWorkers(tmp_path / "reference", method)
    unscattered = _scattered_batch(torch.arange(12))
    from verl.workers.utils.padding import left_right_2_no_padding
    data = left_right_2_no_padding(unscattered.to_tensordict())
    data[REWARD_KEY] = unscattered.batch["token_level_scores"].sum(-1)
    from verl.utils import tensordict_utils as tu
    tu.assign_non_tensor(data, **{GROUP_SIZE_KEY: GROUP_SIZE})
    expected = reference.lld_score_old_policy(data)[ADVANTAGES_KEY][permutation]
    assert torch.allclose(workers.updated_advantages.float(), expected, atol=1e-6)
    if method == "pos_only":
        assert bool((workers.updated_advantages >= 0).all())
    metrics = output.meta_info["metrics"]
    assert metrics["lld/rate"] == 0.5 and "actor/pg_loss" in metrics and "perf/mfu/actor" in metrics
    assert workers.finish_scalars["actor/pg_loss"] == pytest.approx(0.375)


def test_group_order_refuses_groups_of_the_wrong_size():
    assert group_order(["a", "b", "a", "b"], 2).tolist() == [0, 2, 1, 3]
    with pytest.raises(ValueError, match="rollout.n=2"):
        group_order(["a", "b", "a"], 2)
