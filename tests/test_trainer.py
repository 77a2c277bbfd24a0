"""LLDGRPOTrainer on the tiny model: the four methods, probes, run store, kill and resume."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from lld_probe.models import load_model
from lld_probe.scoring import score_group
from lld_probe.core import sequence_logprob
from lld_probe.store.run_store import read_run_store
from lld_probe.integrations.trl.run import TrainSettings, make_trainer, run_training
from helpers import train_settings


def _settings(tmp_path, method, **kwargs):
    values = dict(out=str(tmp_path / method), method=method, steps=2, prompts_per_step=4, group_size=8,
                  eval_every=0, probe_set_size=6, probe_every=1, progress=False)
    values.update(kwargs)
    return train_settings(**values)


def _generation_batch(trainer, seed=0):
    """One generation batch through the trainer's own _generate_and_score_completions, seeded, then through
    its loss (where the old policy is scored when it reuses TRL's training forward)."""
    trainer.model.train()
    raw = next(iter(trainer.get_train_dataloader()))
    torch.manual_seed(seed)
    output = trainer._generate_and_score_completions(raw)
    trainer.current_gradient_accumulation_steps = 1      # set by train()
    trainer.compute_loss(trainer.model, output)
    return raw, output


@pytest.fixture(scope="module")
def nthr_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nthr")
    # 120 packed tokens per re-scoring forward: the 4 groups (a 44-token prompt each) take several chunks
    trainer = run_training(_settings(tmp, "nthr", steps=3, extra={"probe_score_max_tokens": 120}))
    return trainer, read_run_store(tmp / "nthr")


def test_store_has_every_step_and_selection_touches_only_incorrect_tokens(nthr_run):
    trainer, store = nthr_run
    assert sorted(store.responses["step"].unique()) == [1, 2, 3]
    assert len(store.responses) == 3 * 4 * 8
    assert store.responses.groupby(["step", "group_id"]).size().eq(8).all()
    tokens = store.tokens.merge(store.responses[["step", "group_id", "response_index", "correct"]],
                                on=["step", "group_id", "response_index"])
    assert len(tokens) == int(store.responses["n_tokens"].sum())
    assert not tokens.loc[tokens["correct"], "scaled"].any()
    assert not tokens.loc[tokens["correct"], "nthr_selected"].any()
    assert tokens["scaled"].equals(tokens["nthr_selected"])          # nthr scales exactly its selection
    assert store.meta["method"] == "nthr" and store.meta["group_size"] == 8
    assert store.meta["schema_version"] == 2 and store.meta["old_policy_source"] == "training_forward"
    assert "one optimizer step per generation batch" in store.meta["old_policy_source_reason"]
    names = set(store.scalars["name"])
    assert {"lld/rate", "lld/delta_correct", "loss", "reward"} <= names


def test_logp_after_matches_an_independent_rescoring(nthr_run):
    trainer, store = nthr_run
    pending = trainer.last_probed               # the last step's generation batch
    last = store.responses[store.responses["step"] == 3].reset_index(drop=True)
    assert trainer.probe_settings.probe_score_max_tokens == 120
    # the final model = the model after step 3; full padded rows, independent of the packed re-scoring
    scored = score_group(trainer.model, pending.batch, layout="rows")
    recomputed = sequence_logprob(scored.token_logps, pending.batch.mask).double().numpy()
    assert recomputed == pytest.approx(last["logp_after"].to_numpy(), abs=1e-4)
    # logp_before is the sum of the per-token rows, and the stored token ids are the batch's
    step_tokens = store.tokens[store.tokens["step"] == 3]
    sums = step_tokens.groupby(["group_id", "response_index"], sort=True)["logp_before"].sum()
    by_row = last.set_index(["group_id", "response_index"])["logp_before"].sort_index()
    assert sums.to_numpy() == pytest.approx(by_row.to_numpy(), abs=1e-4)
    first = step_tokens[(step_tokens["group_id"] == last["group_id"][0]) & (step_tokens["response_index"] == 0)]
    assert first.sort_values("position")["token_id"].tolist() == \
        pending.batch.tokens[0, : int(pending.batch.mask[0].sum())].tolist()


def test_probe_set_and_scalars_go_through_trl_metrics(nthr_run):
    trainer, store = nthr_run
    probes = store.probe_set
    assert set(probes["step"]) == {0, 1, 2, 3}
    assert set(probes["kind"]) <= {"correct", "near_miss"}
    assert probes.groupby("step").size().nunique() == 1
    logged = [entry for entry in trainer.state.log_history if "lld/rate" in entry]
    assert len(logged) == 3


def test_old_policy_from_trl_loss_forward_equals_a_separate_forward(tmp_path):
    model, tokenizer = load_model("tiny")
    reused, _ = make_trainer(_settings(tmp_path, "nthr"), model=model, tokenizer=tokenizer)
    separate, _ = make_trainer(_settings(tmp_path, "nthr", out=str(tmp_path / "separate"),
                                         extra={"probe_reuse_training_forward": False}), model=model, tokenizer=tokenizer)
    assert reused.old_policy_source == "training_forward" and separate.old_policy_source == "separate_forward"
    from trl.trainer.utils import shuffle_sequence_dict
    reused.model.train()
    raw = next(iter(reused.get_train_dataloader()))
    torch.manual_seed(5)
    shuffled = shuffle_sequence_dict(reused._generate_and_score_completions(raw))    # as TRL's _prepare_inputs
    assert not torch.equal(shuffled["lld_row"], torch.arange(len(shuffled["lld_row"])))
    reused.current_gradient_accumulation_steps = 1
    reused.compute_loss(reused.model, shuffled)
    torch.manual_seed(5)
    in_order = separate._generate_and_score_completions(raw)
    a, b = reused.pending_probed, separate.pending_probed
    assert torch.equal(a.batch.tokens, b.batch.tokens)
    # TRL's forward (left-padded prompts, fused head) and ours (right-padded): the same numbers up to rounding
    assert torch.allclose(a.token_logps_before, b.token_logps_before, atol=1e-5)
    assert torch.allclose(a.entropy, b.entropy, atol=1e-5)
    # scores are sums of large terms (up to ~500 here) that cancel: float32 rounding relative to their scale
    assert torch.allclose(a.scores, b.scores, rtol=0, atol=1e-5 * float(b.scores.abs().max()))
    assert torch.equal(a.nthr_selected, b.nthr_selected) and a.nthr_selected.any()
    rows = shuffled["lld_row"]            # generation-order row of each shuffled row
    assert torch.equal(shuffled["completion_ids"], in_order["completion_ids"][rows])
    assert torch.allclose(shuffled["advantages"], in_order["advantages"][rows])


def test_old_policy_needs_a_separate_forward_when_the_loss_forward_is_not_at_the_old_policy(tmp_path):
    from lld_probe.integrations.trl.old_policy_source import decide_old_policy_source
    trainer, _ = make_trainer(_settings(tmp_path, "nthr", extra={"steps_per_generation": 2,
                                                                 "gradient_accumulation_steps": 2}))
    assert trainer.old_policy_source == "separate_forward"
    assert trainer.old_policy_source_reason.startswith("steps_per_generation=2, gradient_accumulation_steps=2")
    args, model = trainer.args, trainer.model
    args.steps_per_generation = args.gradient_accumulation_steps = 1
    model.config.attention_dropout = 0.1
    assert decide_old_policy_source(True, args, 1, model).name == "separate_forward"
    model.config.attention_dropout = 0.0
    assert decide_old_policy_source(True, args, 1, model).name == "training_forward"
    assert decide_old_policy_source(True, args, 2, model).reason.startswith("num_iterations=2")
    args.bf16 = True
    assert decide_old_policy_source(True, args, 1, model).reason.startswith("bf16=True")
    args.bf16 = False
    assert decide_old_policy_source(False, args, 1, model).reason == "probe_reuse_training_forward=False"
    before = torch.get_float32_matmul_precision()
    try:                        # TF32: the loss forward's float32 matmuls are rounded
        torch.set_float32_matmul_precision("high")
        assert decide_old_policy_source(True, args, 1, model).reason.startswith("TF32 matmuls")
    finally:
        torch.set_float32_matmul_precision(before)
    assert decide_old_policy_source(True, args, 1, model).name == "training_forward"


def test_the_mixin_alone_on_a_plain_grpo_trainer_takes_the_loss_forward_and_refuses_the_wrong_base_order(tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    from lld_probe.integrations.trl import LikelihoodProbeMixin
    from lld_probe.probes import ProbeSettings
    from lld_probe.integrations.trl.run import build_dataset, reward_function
    from lld_probe.tasks import get_task

    class MyTrainer(LikelihoodProbeMixin, GRPOTrainer):
        pass

    with pytest.raises(TypeError, match="LikelihoodProbeMixin must come before GRPOTrainer"):
        class Wrong(GRPOTrainer, LikelihoodProbeMixin):
            pass
    model, tokenizer = load_model("tiny")
    task = get_task("arithmetic")
    config = GRPOConfig(output_dir=str(tmp_path / "mine"), num_generations=8, per_device_train_batch_size=16,
                        max_completion_length=8, max_steps=1, use_cpu=True, bf16=False, report_to=[],
                        save_strategy="no", disable_tqdm=True)
    trainer = MyTrainer(model, [reward_function(task)], config, build_dataset(task, tokenizer, 16, seed=0),
                        processing_class=tokenizer, probe_settings=ProbeSettings(method="nthr", probe_set_size=0))
    assert trainer.old_policy_source == "training_forward" and trainer.probe_settings.method == "nthr"
    trainer.train()
    store = read_run_store(tmp_path / "mine")
    assert store.meta["old_policy_source"] == "training_forward" and len(store.responses) == 16


def test_pos_only_has_no_negative_advantage(tmp_path):
    trainer, _ = make_trainer(_settings(tmp_path, "pos_only"))
    _, output = _generation_batch(trainer)
    assert output["advantages"].dim() == 1
    assert (output["advantages"] >= 0).all()


def test_random_scales_as_many_tokens_per_response_as_nthr(tmp_path):
    trainer, _ = make_trainer(_settings(tmp_path, "random"))
    _, output = _generation_batch(trainer)
    pending = trainer.pending_probed
    assert output["advantages"].shape == output["completion_ids"].shape
    assert torch.equal(pending.scaled.sum(1), pending.nthr_selected.sum(1))
    assert not pending.scaled[pending.correct].any()
    if pending.nthr_selected.any():
        assert not torch.equal(pending.scaled, pending.nthr_selected) or \
            pending.nthr_selected.sum() == pending.batch.mask[~pending.correct].sum()


def test_nthr_token_advantages_follow_eta_on_the_selection(tmp_path):
    trainer, _ = make_trainer(_settings(tmp_path, "nthr", nthr_eta="0.25"))
    _, output = _generation_batch(trainer)
    pending = trainer.pending_probed
    width = pending.batch.tokens.shape[1]
    per_token = output["advantages"][:, :width]
    expected = pending.advantages[:, None].expand_as(per_token) * torch.where(pending.scaled, 0.25, 1.0)
    assert torch.allclose(per_token[pending.batch.mask], expected[pending.batch.mask].to(per_token.dtype))
    assert (output["advantages"][:, width:] == 0).all()


def test_grpo_loss_equals_plain_grpo_trainer(tmp_path):
    from trl import GRPOTrainer
    model, tokenizer = load_model("tiny")
    ours, _ = make_trainer(_settings(tmp_path, "grpo"), model=model, tokenizer=tokenizer)
    plain, _ = make_trainer(_settings(tmp_path, "grpo", probes=False, out=str(tmp_path / "plain")),
                            model=model, tokenizer=tokenizer)
    assert type(plain) is GRPOTrainer
    raw, ours_inputs = _generation_batch(ours, seed=3)
    plain.model.train()
    torch.manual_seed(3)
    plain_inputs = plain._generate_and_score_completions(raw)
    assert torch.equal(ours_inputs["completion_ids"], plain_inputs["completion_ids"])
    assert torch.equal(ours_inputs["advantages"], plain_inputs["advantages"])
    ours.current_gradient_accumulation_steps = plain.current_gradient_accumulation_steps = 1   # set by train()
    loss_ours = ours.compute_loss(model, ours_inputs)
    loss_plain = plain.compute_loss(model, plain_inputs)
    assert float(loss_ours) == float(loss_plain)


class _Kill(TrainerCallback):
    def __init__(self, at):
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt("killed for the test")


@pytest.mark.integration
def test_killed_run_loads_and_resume_continues(tmp_path):
    settings = _settings(tmp_path, "grpo", steps=3, save_steps=1)
    trainer, _ = make_trainer(settings)
    trainer.add_callback(_Kill(2))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    store = read_run_store(settings.out)
    assert sorted(store.responses["step"].unique()) == [1, 2]
    resumed = run_training(TrainSettings(**{**settings.__dict__, "resume": True}))
    assert resumed.state.global_step == 3
    store = read_run_store(settings.out)
    assert sorted(store.responses["step"].unique()) == [1, 2, 3]
    assert not store.scalars.duplicated(["step", "name"]).any()
    assert store.meta["restarts"] == 1


def test_a_non_binary_reward_given_alike_to_every_response_makes_no_group_mixed(tmp_path):
    trainer, _ = make_trainer(_settings(tmp_path, "nthr"))
    trainer.reward_funcs = [lambda completions, **kw: [0.5] * len(completions)]
    trainer.reward_func_names = ["half"]
    _generation_batch(trainer)            # no correctness setting needed: the advantage sign decides
    pending = trainer.pending_probed
    assert not pending.correct.any() and not pending.scaled.any() and (pending.advantages == 0).all()


def test_a_new_run_refuses_an_existing_store(tmp_path):
    settings = _settings(tmp_path, "grpo", steps=1, probe_set_size=0)
    run_training(settings)
    with pytest.raises(FileExistsError, match="already holds a run store"):
        run_training(settings)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run_training(TrainSettings(**{**settings.__dict__, "resume": True}))


def test_the_trainer_takes_its_arguments_as_grpo_trainer_does_and_refuses_a_vision_language_model(tmp_path):
    from lld_probe.integrations.trl import LLDConfig, LLDGRPOTrainer
    from lld_probe.integrations.trl.run import build_dataset, reward_function
    from lld_probe.tasks import get_task
    model, tokenizer = load_model("tiny")
    task = get_task("arithmetic")
    config = LLDConfig(output_dir=str(tmp_path / "positional"), method="nthr", num_generations=8,
                       per_device_train_batch_size=8, max_completion_length=8, use_cpu=True, bf16=False,
                       report_to=[], save_strategy="no")
    dataset = build_dataset(task, tokenizer, 8, seed=0)
    trainer = LLDGRPOTrainer(model, [reward_function(task)], config, dataset, processing_class=tokenizer)
    assert trainer.probe_settings.method == "nthr" and trainer.args is config
    model.config.vision_config = {"model_type": "stand-in"}
    with pytest.raises(ValueError, match="vision-language model .* not supported"):
        LLDGRPOTrainer(model, [reward_function(task)], config, dataset, processing_class=tokenizer)
    del model.config.vision_config
