"""The trainer extension's step (LLDRayPPOTrainer._update_actor -> ProbeStep -> verl's own
RayPPOTrainer._update_actor) against a stand-in worker group that scores with the project's single-process
recorder: rows scattered as trainer.balance_batch leaves them are scored in group order, the method's
advantages land on the right rows of verl's batch, verl's update sees them, and the lld/ metrics join the
actor's."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from needs_verl import require_verl

require_verl()

from omegaconf import OmegaConf  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from verl import DataProto  # noqa: E402

from engine_harness import GROUP_SIZE, TEMPERATURE, grpo_token_advantages, make_batch  # noqa: E402
from lld_probe.integrations.verl.engine_probes import (ADVANTAGES_KEY, GROUP_SIZE_KEY, REWARD_KEY,  # noqa: E402
                                                       WINDOW_STEPS_KEY)
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
        self.recorder.begin_run({"method": method, "source": "verl"})
        self.calls, self.scored_prompts, self.updated_advantages, self.finish_scalars = [], None, None, None

    def lld_score_old_policy(self, data):
        self.calls.append("score")
        from verl.utils import tensordict_utils as tu
        prompt_ids, completion_ids = token_lists(data["prompts"], data["responses"], data["attention_mask"],
                                                 data["response_mask"])
        self.scored_prompts = prompt_ids
        self.window_steps = tu.get(data, WINDOW_STEPS_KEY)
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
        from verl.utils import tensordict_utils as tu
        self.update_mini_batch, self.update_epochs = tu.get(data, "mini_batch_size"), tu.get(data, "epochs")
        self.updated_advantages = data["advantages"].clone()
        return TensorDict({}, batch_size=[]).set_non_tensor("metrics", {"pg_loss": [0.5, 0.25], "mfu": 0.1})

    def lld_finish_step(self, scalars):
        """As two ranks answer: the same metrics, each its half of the rows' logp_before / logp_after."""
        self.calls.append("finish")
        self.finish_scalars = scalars
        responses = self.recorder.finish_step(self.model).responses
        half = len(responses) // 2
        return [{"metrics": {"lld/rate": 0.5},
                 "rows": {key: responses[key].iloc[part].tolist() for key in ("logp_before", "logp_after")}}
                for part in (slice(0, half), slice(half, None))]


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
    trainer.lld_step, trainer.lld_run_begun = ProbeStep(workers, group_size=GROUP_SIZE), True
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


@pytest.mark.parametrize("mini_batch_prompts, epochs, window_steps", [(3, 1, 1), (1, 1, 3), (1, 2, 6)])
def test_the_step_sends_verls_optimizer_steps_as_the_window(tmp_path, mini_batch_prompts, epochs, window_steps):
    """12 responses in groups of 4: verl's update runs mini-batches of ppo_mini_batch_size x rollout.n responses,
    ppo_epochs times; the probes are told that many optimizer steps (EngineProbes writes them as window_steps)."""
    trainer = object.__new__(LLDRayPPOTrainer)
    workers = StandInWorkers(tmp_path / "store", "grpo")
    config = _config()
    config.actor_rollout_ref.actor.ppo_mini_batch_size, config.actor_rollout_ref.actor.ppo_epochs = mini_batch_prompts, epochs
    trainer.config, trainer.actor_rollout_wg, trainer.global_steps = config, workers, 1
    trainer.lld_step, trainer.lld_run_begun = ProbeStep(workers, group_size=GROUP_SIZE), True
    trainer._update_actor(_scattered_batch(torch.arange(12)))
    assert (workers.update_mini_batch, workers.update_epochs) == (mini_batch_prompts * GROUP_SIZE, epochs)
    assert 12 // workers.update_mini_batch * workers.update_epochs == window_steps   # verl's train_mini_batch count
    assert workers.window_steps == window_steps


def test_group_order_refuses_groups_of_the_wrong_size():
    assert group_order(["a", "b", "a", "b"], 2).tolist() == [0, 2, 1, 3]
    with pytest.raises(ValueError, match="rollout.n=2"):
        group_order(["a", "b", "a"], 2)


def _with_logps(batch):
    """The old policy's and the sampler's per-token log-probs verl's batch holds (made-up values, 0 past the end)."""
    mask = batch.batch["response_mask"].float()
    generator = torch.Generator().manual_seed(5)
    batch.batch["old_log_probs"] = -torch.rand(mask.shape, generator=generator) * mask
    batch.batch["rollout_log_probs"] = (batch.batch["old_log_probs"] - 0.01) * mask
    return batch


def _dumped_rows(trainer, batch, folder, step):
    trainer.tokenizer = load_model("tiny")[1]
    trainer.global_steps = step
    trainer._init_dump_executor()
    trainer._log_rollout_data(batch, {"acc": [1.0] * len(batch)}, {}, str(folder))
    trainer._shutdown_dump_executor()
    return [json.loads(line) for line in (folder / f"{step}.jsonl").read_text().splitlines()]


def _check_row_by_row(rows, batch, verl_advantages):
    """Each dump row holds its own row of verl's batch: uid, unpadded token ids, per-token log-probs, advantage."""
    data = batch.batch
    width = data["prompts"].shape[1]
    for row, entry in enumerate(rows):
        length = int(data["response_mask"][row].sum())
        assert entry["uid"] == batch.non_tensor_batch["uid"][row]
        assert entry["completion_ids"] == data["responses"][row, :length].tolist()
        assert entry["prompt_ids"] == data["prompts"][row][data["attention_mask"][row, :width].bool()].tolist()
        assert entry["old_policy_logps"] == pytest.approx(data["old_log_probs"][row, :length].tolist(), abs=1e-7)
        assert entry["sampler_logps"] == pytest.approx(data["rollout_log_probs"][row, :length].tolist(), abs=1e-7)
        assert entry["advantage"] == pytest.approx(float(verl_advantages[row]), abs=1e-7)
        assert entry["acc"] == 1.0                          # verl's own extra columns are kept


def test_a_probed_step_dumps_the_token_columns_equal_to_the_store(tmp_path):
    """LLDRayPPOTrainer: verl's own _log_rollout_data after the probed update writes rows with the token dump's
    columns; the reader (groups by uid) gives the store's logp_before / logp_after / advantage per response."""
    from lld_probe.analysis.read_verl import read_verl_dumps
    from lld_probe.store.run_store import read_run_store
    from lld_probe.store.schema import TOKEN_DUMP_COLUMNS
    permutation = torch.tensor([5, 0, 11, 3, 8, 1, 6, 10, 2, 9, 4, 7])
    batch = _with_logps(_scattered_batch(permutation))
    verl_advantages = sequence_advantages(batch.batch["advantages"], batch.batch["response_mask"]).clone()
    trainer = object.__new__(LLDRayPPOTrainer)
    workers = StandInWorkers(tmp_path / "store", "nthr")
    trainer.config, trainer.actor_rollout_wg, trainer.global_steps = _config(), workers, 1
    trainer.lld_step, trainer.lld_run_begun = ProbeStep(workers, group_size=GROUP_SIZE), True
    trainer._update_actor(batch)
    rows = _dumped_rows(trainer, batch, tmp_path / "dump", 1)
    assert len(rows) == 12 and set(TOKEN_DUMP_COLUMNS) <= set(rows[0])
    _check_row_by_row(rows, batch, verl_advantages)
    dumped = read_verl_dumps(tmp_path / "dump").responses
    store = read_run_store(tmp_path / "store")
    both = dumped.merge(store.responses, on=["step", "group_id", "response_index"], suffixes=("_d", "_s"),
                        validate="one_to_one")
    assert len(both) == 12 and both["logp_before_d"].notna().all()
    np.testing.assert_array_equal(both["logp_before_d"], both["logp_before_s"])
    np.testing.assert_array_equal(both["logp_after_d"], both["logp_after_s"])
    np.testing.assert_allclose(both["advantage_d"], both["advantage_s"], rtol=0, atol=1e-7)
    for row in both.itertuples():                   # the store's token rows are the dump's completion ids
        tokens = store.tokens[(store.tokens["group_id"] == row.group_id) &
                              (store.tokens["response_index"] == row.response_index)].sort_values("position")
        if len(tokens):
            assert tokens["token_id"].tolist() == list(row.completion_ids)


def test_without_probes_the_dump_carries_the_sampled_tokens(tmp_path):
    """TokenDumpRayPPOTrainer: the same columns for a run without the probes (logp_before / logp_after null)."""
    from lld_probe.analysis.read_verl import read_verl_dumps
    from lld_probe.integrations.verl.trainer import TokenDumpRayPPOTrainer
    permutation = torch.tensor([5, 0, 11, 3, 8, 1, 6, 10, 2, 9, 4, 7])
    batch = _with_logps(_scattered_batch(permutation))
    trainer = object.__new__(TokenDumpRayPPOTrainer)
    rows = _dumped_rows(trainer, batch, tmp_path / "dump", 3)
    _check_row_by_row(rows, batch, sequence_advantages(batch.batch["advantages"], batch.batch["response_mask"]))
    assert all(entry["logp_before"] is None and entry["logp_after"] is None for entry in rows)
    dumped = read_verl_dumps(tmp_path / "dump").responses
    for _, group in dumped.groupby("group_id"):
        assert group["uid"].nunique() == 1 and len(group) == GROUP_SIZE
        assert len({tuple(ids) for ids in group["prompt_ids"]}) == 1
    # advantages that vary within a response (a critic's GAE) have no per-response value: NaN, and the dump runs
    batch.batch["advantages"] = torch.rand(batch.batch["advantages"].shape) * batch.batch["response_mask"]
    rows = _dumped_rows(trainer, batch, tmp_path / "dump-gae", 4)
    assert all(math.isnan(entry["advantage"]) for entry in rows) and rows[0]["completion_ids"]


def test_the_probed_trainer_refuses_a_critics_advantages_at_construction(monkeypatch):
    """Before init_workers: verl's own ppo_trainer config with adv_estimator=gae (its default) is refused."""
    from pathlib import Path

    import verl.trainer
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    def verl_init(self, config):
        self.config = config
    monkeypatch.setattr(RayPPOTrainer, "__init__", verl_init)
    with initialize_config_dir(config_dir=str(Path(verl.trainer.__file__).parent / "config"), version_base=None):
        config = compose(config_name="ppo_trainer", overrides=["trainer.use_v1=false", "actor_rollout_ref.rollout.n=4"])
    with pytest.raises(ValueError, match="^algorithm.adv_estimator=gae: "):
        LLDRayPPOTrainer(config)
    config.algorithm.adv_estimator = "grpo"
    assert LLDRayPPOTrainer(config).lld_run_begun is False


def test_the_dump_refuses_multi_turn_rollouts_at_construction(monkeypatch):
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer
    from lld_probe.integrations.verl.trainer import TokenDumpRayPPOTrainer

    def verl_init(self, config):
        self.config = config
    monkeypatch.setattr(RayPPOTrainer, "__init__", verl_init)
    config = OmegaConf.create({"trainer": {"rollout_data_dir": "/tmp/dump"},
                               "actor_rollout_ref": {"rollout": {"multi_turn": {"enable": True}}}})
    with pytest.raises(ValueError, match="multi_turn.enable"):
        TokenDumpRayPPOTrainer(config)


class _EngineWithoutModel:
    """What EngineProbes reads of an engine when it is built (no forward runs)."""

    def forward_step(self, micro_batch, loss_function, forward_only):
        raise AssertionError("no forward in this test")

    def get_data_parallel_size(self):
        return 1


class _CheckpointedWorkers:
    """The actor worker group's load_checkpoint (recorded) and the worker extension's own lld_begin_run, run on
    one worker whose engine has no model."""

    def __init__(self):
        from types import SimpleNamespace
        self.worker = SimpleNamespace(actor=SimpleNamespace(engine=_EngineWithoutModel(),
                                                            model_config=SimpleNamespace(tokenizer=None)))
        self.calls = []

    def load_checkpoint(self, path, del_local_after_load=False):
        self.calls.append(("load_checkpoint", path))

    def lld_begin_run(self, *args):
        from lld_probe.integrations.verl.worker import LLDActorRolloutRefWorker
        self.calls.append(("lld_begin_run", args[-1]))
        return LLDActorRolloutRefWorker.lld_begin_run(self.worker, *args)


def _trainer_at_start(checkpoints, store, resume_mode="auto"):
    """LLDRayPPOTrainer as fit() finds it before its first step (workers built, global_steps 0)."""
    from lld_probe.probes import ProbeSettings
    trainer = object.__new__(LLDRayPPOTrainer)
    config = _config()
    config.merge_with({"data": {"train_batch_size": 3},
                       "trainer": {"resume_mode": resume_mode, "default_local_dir": str(checkpoints),
                                   "default_hdfs_dir": None, "del_local_ckpt_after_load": False,
                                   "balance_batch": True},
                       "algorithm": {"adv_estimator": "grpo"},
                       "actor_rollout_ref": {"model": {"path": "tiny"}, "actor": {"optim": {"lr": 1e-6}}}})
    trainer.config, trainer.actor_rollout_wg, trainer.global_steps = config, _CheckpointedWorkers(), 0
    trainer.use_critic, trainer.train_dataloader, trainer.lld_run_begun = False, [], False
    trainer.lld_settings, trainer.lld_store_dir = ProbeSettings(method="nthr", probe_set_size=0), str(store)
    return trainer


def _store_with_steps(folder, steps):
    import pandas as pd
    from lld_probe.store.run_store import RunStoreWriter
    from lld_probe.store.schema import RESPONSE_COLUMNS
    writer = RunStoreWriter(folder)
    writer.write_meta({"source": "verl"})
    for step in steps:
        writer.write_step(step, pd.DataFrame({column: [step] for column in RESPONSE_COLUMNS}))
        writer.append_scalars(step, {"lld/rate": 0.5})


def test_a_resumed_run_goes_on_in_its_store_from_verls_checkpoint_step(tmp_path):
    """verl's own _load_checkpoint (trainer.resume_mode=auto, the latest global_step_N folder) sets global_steps;
    the run store begins after it, resumed at that step: the steps after the checkpoint are dropped."""
    from lld_probe.store.run_store import read_run_store
    checkpoints, store = tmp_path / "checkpoints", tmp_path / "checkpoints" / "lld_store"
    (checkpoints / "global_step_2").mkdir(parents=True)
    (checkpoints / "latest_checkpointed_iteration.txt").write_text("2")
    _store_with_steps(store, [1, 2, 3])
    trainer = _trainer_at_start(checkpoints, store)
    trainer._load_checkpoint()
    assert trainer.global_steps == 2 and trainer.lld_run_begun
    assert [call[0] for call in trainer.actor_rollout_wg.calls] == ["load_checkpoint", "lld_begin_run"]
    assert trainer.actor_rollout_wg.calls[1] == ("lld_begin_run", 2)
    resumed = read_run_store(store)
    assert sorted(resumed.responses["step"].unique()) == [1, 2] and sorted(resumed.scalars["step"].unique()) == [1, 2]
    assert resumed.meta["restarts"] == 1 and resumed.meta["source"] == "verl"
    assert resumed.meta["delta_spans_optimizer_steps"] == 1      # 3 prompts x 4 responses, mini-batches of 3 x 4


@pytest.mark.parametrize("resume_mode", ["auto", "disable"])
def test_a_new_run_refuses_a_store_in_use_naming_verls_settings(tmp_path, resume_mode):
    """No checkpoint to resume from (or resume_mode=disable): a store that holds steps is refused, with verl's
    settings in the advice (not TRL's)."""
    checkpoints, store = tmp_path / "checkpoints", tmp_path / "store"
    (checkpoints / "global_step_2").mkdir(parents=True)
    if resume_mode == "auto":
        checkpoints = tmp_path / "elsewhere"
    _store_with_steps(store, [1])
    trainer = _trainer_at_start(checkpoints, store, resume_mode)
    with pytest.raises(FileExistsError, match=r"lld\.store_dir.*trainer\.resume_mode") as refusal:
        trainer._load_checkpoint()
    assert "resume_from_checkpoint" not in str(refusal.value) and "\n" not in str(refusal.value)
    assert trainer.global_steps == 0 and not trainer.lld_run_begun


def test_the_step_refuses_to_run_before_the_store_is_begun(tmp_path):
    trainer = _trainer_at_start(tmp_path / "checkpoints", tmp_path / "store")
    with pytest.raises(RuntimeError, match="_load_checkpoint"):
        trainer._update_actor(_scattered_batch(torch.arange(12)))
