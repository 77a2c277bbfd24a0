"""Every generation batch TRL makes is recorded exactly once, whatever gradient_accumulation_steps,
steps_per_generation and num_iterations; each response says how many optimizer steps its Delta spans."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import TrainerCallback

from lld_probe.integrations.trl.adapter import completion_rows
from lld_probe.integrations.trl.batch_windows import batch_end, run_windows, window_steps
from lld_probe.integrations.trl.run import make_trainer
from lld_probe.rescore.sources import read_store
from lld_probe.store.run_store import read_run_store
from helpers import train_settings

# (gradient_accumulation_steps, steps_per_generation, num_iterations, max_steps): max_steps * accumulation is a
# multiple of steps_per_generation * num_iterations, so every batch is used to its end
GRID = [(1, 1, 1, 2), (2, 2, 1, 2), (3, 4, 2, 8), (2, 3, 1, 3), (4, 2, 2, 2), (1, 2, 3, 12), (3, 2, 1, 2)]


class _MicroSteps(TrainerCallback):
    """TRL's micro-step count at the end of each optimizer step."""

    def __init__(self, trainer):
        self.trainer, self.at_step = trainer, {}

    def on_step_end(self, args, state, control, **kwargs):
        self.at_step[state.global_step] = self.trainer._step


def _expected_finish(generated_at: int, uses: int, at_step: dict) -> int:
    """The first optimizer step whose micro-steps include the batch's last use (micro-step generated_at + uses - 1)."""
    return min(step for step, micro in at_step.items() if micro >= generated_at + uses)


def _simulated_windows(accumulation: int, every: int, micro_steps: int) -> list[int]:
    """TRL's loop step by step: generate when the micro-step count is a multiple of `every`; the optimizer steps
    after every `accumulation` micro-steps; a batch's window runs from the optimizer steps done at its generation
    to the first optimizer step after its last use."""
    windows, open_batches, optimizer_steps = [], [], 0
    for micro in range(micro_steps):
        if micro % every == 0:
            open_batches.append((micro + every - 1, optimizer_steps))    # (last micro-step using it, old policy)
        if (micro + 1) % accumulation == 0:
            optimizer_steps += 1
            windows += [optimizer_steps - policy for last, policy in open_batches if last <= micro]
            open_batches = [(last, policy) for last, policy in open_batches if last > micro]
    return windows


@pytest.mark.parametrize("accumulation", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("per_generation, iterations", [(1, 1), (2, 1), (4, 2), (3, 1), (1, 3), (2, 3)])
def test_batch_windows_follow_trls_schedule(accumulation, per_generation, iterations):
    every = per_generation * iterations
    period = math.lcm(every, accumulation)
    simulated = _simulated_windows(accumulation, every, period)
    assert [window_steps(g, every, accumulation) for g in range(0, period, every)] == simulated
    assert run_windows(per_generation, iterations, accumulation) == set(simulated)
    assert [batch_end(g, every) for g in range(0, period, every)] == list(range(every, period + 1, every))


@pytest.mark.integration
@pytest.mark.parametrize("accumulation, per_generation, iterations, max_steps", GRID)
def test_every_generation_batch_is_recorded_once_with_its_window(tmp_path, accumulation, per_generation,
                                                                 iterations, max_steps):
    settings = train_settings(out=str(tmp_path / "run"), method="nthr", steps=max_steps, prompts_per_step=2,
                              group_size=2, max_completion_length=6, eval_every=0, probe_set_size=0,
                              progress=False, extra={"gradient_accumulation_steps": accumulation,
                                                     "steps_per_generation": per_generation,
                                                     "num_iterations": iterations})
    trainer, _ = make_trainer(settings)
    tokenizer = trainer.processing_class
    generated, loss_advantages = [], []         # counted here, independently of the probes
    generate, compute_loss = trainer._generate_and_score_completions, trainer._compute_loss

    def counted_generate(inputs):
        output = generate(inputs)
        if trainer.model.training:
            mask = output["completion_mask"].cpu()
            rows = completion_rows(output["completion_ids"].cpu(), mask)
            old = output.get("old_per_token_logps")      # TRL's own old policy, when its updates fall inside the batch
            old = None if old is None else (old.detach().cpu().double() * mask).sum(1)
            generated.append((trainer._step, trainer.state.global_step,
                              tokenizer.batch_decode(rows, skip_special_tokens=True), old))
        return output

    def seen_loss(model, inputs):
        loss = compute_loss(model, inputs)
        loss_advantages.append(inputs["advantages"].dim())
        return loss

    trainer._generate_and_score_completions, trainer._compute_loss = counted_generate, seen_loss
    micro = _MicroSteps(trainer)
    trainer.add_callback(micro)
    trainer.train()

    uses = per_generation * iterations
    assert len(generated) == -(-max_steps * accumulation // uses)
    expected, old_policy = [], []
    for generated_at, policy_step, texts, old in generated:      # finished in generation order
        finish = _expected_finish(generated_at, uses, micro.at_step)
        expected += [(finish, text, finish - policy_step) for text in texts]
        old_policy += [math.nan] * len(texts) if old is None else old.tolist()
    store = read_run_store(tmp_path / "run")
    responses = store.responses
    assert len(responses) == len(expected)
    assert not responses.duplicated(["step", "group_id", "response_index"]).any()
    assert responses.groupby(["step", "group_id"]).size().eq(2).all()       # group ids unique within a step
    # a step's batches in generation order, their groups numbered on: group_id "STEP:INDEX"
    order = responses.assign(group=[int(g.split(":")[1]) for g in responses["group_id"]]) \
        .sort_values(["step", "group", "response_index"]).reset_index(drop=True)
    assert list(zip(order["step"], order["completion"], order["window_steps"])) == expected
    # the probes' old policy is TRL's: the parameters at generation, for every batch in the queue
    trl_old = torch.tensor(old_policy, dtype=torch.float64)
    measured = ~torch.isnan(trl_old)
    assert measured.any() == (accumulation % uses != 0)
    torch.testing.assert_close(torch.tensor(order["logp_before"].to_numpy())[measured], trl_old[measured],
                               rtol=0, atol=1e-4)
    # NTHR's per-token advantages reached TRL's loss on every micro-step of every batch
    assert len(loss_advantages) == max_steps * accumulation and set(loss_advantages) == {2}
    windows = {window for *_, window in expected}
    assert store.meta.get("delta_spans_optimizer_steps") == (min(windows) if len(windows) == 1 else None)
    if accumulation % uses and uses % accumulation:     # re-scoring from checkpoints needs aligned batches
        with pytest.raises(ValueError, match=r"span \[.*\] optimizer steps .* not one span from a multiple"):
            read_store(tmp_path / "run")
    else:
        assert read_store(tmp_path / "run").span == min(windows)
    if (accumulation, per_generation, iterations) == (1, 1, 1):
        assert store.meta["old_policy_source"] == "training_forward"


@pytest.mark.integration
def test_a_run_stopped_inside_a_batch_says_it_is_not_recorded(tmp_path):
    # 3 micro-steps, a batch every 2: the second batch is used by micro-step 2 only when max_steps ends the run
    settings = train_settings(out=str(tmp_path / "run"), method="nthr", steps=1, prompts_per_step=2, group_size=2,
                              max_completion_length=6, eval_every=0, probe_set_size=0, progress=False,
                              extra={"gradient_accumulation_steps": 3, "steps_per_generation": 2})
    trainer, _ = make_trainer(settings)
    with pytest.warns(UserWarning, match=r"inside the micro-steps of 1 generation batch.*not recorded"):
        trainer.train()
    responses = read_run_store(tmp_path / "run").responses
    assert len(responses) == 2 * 2 * 2 and (responses["window_steps"] == 1).all()


def test_the_recorder_finishes_queued_batches_in_order_under_one_step(tmp_path):
    """Two batches awaiting their update (the second generated before the first's last update): one finish_step
    writes both under its step, groups numbered on, each with its own window, metrics over both."""
    from lld_probe.models import load_model
    from lld_probe.probes import ProbeRecorder, ProbeSettings
    from lld_probe.scoring import output_embedding_weight, score_group
    model, _ = load_model("tiny")
    recorder = ProbeRecorder(ProbeSettings(method="nthr", probe_set_size=0), tmp_path / "store", temperature=1.0,
                             pad_id=0)
    recorder.begin_run({"method": "nthr"})
    batches = []
    for generated_for, completions in ((1, [[11], [12, 13], [14, 15, 16], [17]]), (2, [[18, 19], [20], [21], [22]])):
        rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
        generation = recorder.begin_batch(generated_for, [[5, 6]] * 2 + [[7, 8]] * 2, completions, rewards=rewards,
                                          deciding_rewards=rewards, advantages=torch.tensor([1.0, -1.0, 1.0, -1.0]),
                                          group_size=2, prompts=["a", "a", "b", "b"], completions=["x"] * 4,
                                          question_ids=["qa", "qa", "qb", "qb"])
        scored = score_group(model, generation.batch, with_hidden=True, with_entropy=True)
        batches.append(recorder.score_old_policy(generation, scored.token_logps, scored.entropy, scored.hidden,
                                                 output_embedding_weight(model)))
    assert recorder.pending_batches == tuple(batches) and recorder.pending is batches[0]
    with pytest.raises(ValueError, match="token_logps_after re-scores one batch"):
        recorder.finish_step(None, token_logps_after=torch.zeros(4, 3), step=2, batches=2)
    with pytest.raises(RuntimeError, match="finish_step for 3 batch"):
        recorder.finish_step(model, step=2, batches=3)
    record = recorder.finish_step(model, step=2, batches=2)
    assert recorder.pending is None and record.batches == tuple(batches) and record.probed is batches[1]
    responses = read_run_store(tmp_path / "store").responses
    assert list(responses["group_id"]) == ["2:0", "2:0", "2:1", "2:1", "2:2", "2:2", "2:3", "2:3"]
    assert list(responses["step"].unique()) == [2] and list(responses["window_steps"]) == [2] * 4 + [1] * 4
    lengths = [1, 2, 3, 1, 2, 1, 1, 1]
    assert list(responses["n_tokens"]) == lengths and record.metrics["lld/mean_length"] == pytest.approx(1.5)
    before = torch.cat([b.old.logp_before for b in batches]).double()
    assert torch.equal(torch.tensor(responses["logp_before"].to_numpy()), before)
