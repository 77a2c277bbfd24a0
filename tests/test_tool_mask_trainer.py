"""A TRL run whose rollout_func inserts a tool's output inside every completion (env_mask 0 there, which TRL
turns into tool_mask): the probes measure the model's own tokens only. Checked against an independent float64
recomputation on copies of the model before and after the step."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from brute import nthr as brute_nthr
from lld_probe.models import load_model
from lld_probe.store.run_store import read_run_store

TOOL = [7, 7, 9, 11, 5]          # the fixed "tool output"
GROUP = 4


def _rollout(masks: dict):
    """A stand-in multi-turn rollout: the model writes 3 tokens, the tool answers with TOOL, the model writes 4
    more conditioned on it. Returns TRL's rollout_func contract: prompt_ids, completion_ids, logprobs (None: no
    sampler log-probs) and env_mask (1 on the model's tokens, 0 on the tool's)."""
    def rollout(prompts, trainer):
        model, tokenizer = trainer.model, trainer.processing_class
        prompt_ids, completion_ids, env_mask = [], [], []
        with torch.no_grad():
            for prompt in prompts:
                ids = tokenizer(text=prompt)["input_ids"]
                first = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                       do_sample=True, max_new_tokens=3, min_new_tokens=3)[0, len(ids):].tolist()
                context = ids + first + TOOL
                second = model.generate(torch.tensor([context]), attention_mask=torch.ones(1, len(context),
                                                                                            dtype=torch.long),
                                        do_sample=True, max_new_tokens=4, min_new_tokens=4)[0, len(context):].tolist()
                completion = first + TOOL + second
                flags = [1] * len(first) + [0] * len(TOOL) + [1] * len(second)
                masks[(tuple(ids), tuple(completion))] = flags
                prompt_ids.append(ids)
                completion_ids.append(completion)
                env_mask.append(flags)
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None, "env_mask": env_mask}
    return rollout


def _alternating(completions, **kwargs):
    """Half of each group correct (rows alternate), whatever the text: every group is mixed."""
    return [1.0 if i % 2 == 0 else 0.0 for i in range(len(completions))]


def _reference(model, prompt_ids, completion, flags):
    """(sum of log pi(y_t) over the measured tokens, the lm_head inputs that predict each token [T, d]), float64;
    the state at position t-1 predicts token t."""
    states = []
    hook = model.get_output_embeddings().register_forward_pre_hook(lambda module, args: states.append(args[0]))
    try:
        with torch.no_grad():
            ids = torch.tensor([prompt_ids + completion])
            logps = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    finally:
        hook.remove()
    start = len(prompt_ids)
    total = sum(float(logps[start + j - 1, token]) for j, (token, flag) in enumerate(zip(completion, flags)) if flag)
    assert all(int(ids[0, start + j]) == token for j, token in enumerate(completion))
    return total, states[0][0, start - 1: start - 1 + len(completion)].double()


@pytest.mark.integration
@pytest.mark.parametrize("reuse_training_forward", [True, False])
def test_a_rollout_funcs_env_mask_keeps_tool_output_out_of_every_measurement(tmp_path, reuse_training_forward):
    from trl import GRPOConfig, GRPOTrainer

    from lld_probe.integrations.trl import LikelihoodProbeMixin
    from lld_probe.integrations.trl.run import build_dataset
    from lld_probe.probes import ProbeSettings
    from lld_probe.tasks import get_task

    class ToolTrainer(LikelihoodProbeMixin, GRPOTrainer):
        pass

    torch.manual_seed(0)
    model, tokenizer = load_model("tiny")
    before = copy.deepcopy(model)
    masks: dict = {}
    config = GRPOConfig(output_dir=str(tmp_path / "run"), num_generations=GROUP, per_device_train_batch_size=8,
                        max_completion_length=12, max_steps=1, learning_rate=1e-2, use_cpu=True, bf16=False,
                        report_to=[], save_strategy="no", disable_tqdm=True, seed=0)
    settings = ProbeSettings(method="nthr", nthr_eta="0.5", probe_set_size=2, probe_every=1,
                             probe_reuse_training_forward=reuse_training_forward)
    trainer = ToolTrainer(model, [_alternating], config, build_dataset(get_task("arithmetic"), tokenizer, 8, seed=0),
                          processing_class=tokenizer, probe_settings=settings, rollout_func=_rollout(masks))
    assert trainer.old_policy_source == ("training_forward" if reuse_training_forward else "separate_forward")
    trainer.train()
    store = read_run_store(tmp_path / "run")
    responses, tokens = store.responses, store.tokens
    assert len(responses) == 8 and responses["n_tokens"].tolist() == [7] * 8
    assert len(tokens) == 8 * 12 and int((~tokens["measured"]).sum()) == 8 * len(TOOL)
    unembed = before.get_output_embeddings().weight.detach().double()
    for group_id, rows in responses.groupby("group_id"):
        rows = rows.sort_values("response_index")
        prompt_ids = tokenizer(text=rows["prompt"].iloc[0])["input_ids"]
        group_tokens = tokens[tokens["group_id"] == group_id].sort_values(["response_index", "position"])
        completions = [group_tokens[group_tokens["response_index"] == i]["token_id"].tolist() for i in range(GROUP)]
        flags = [masks[(tuple(prompt_ids), tuple(c))] for c in completions]
        measured = torch.tensor(flags, dtype=torch.bool)
        assert group_tokens["measured"].tolist() == [bool(f) for row in flags for f in row]
        # likelihoods before and after the step: the model's own tokens only
        expected_before, hidden = zip(*[_reference(before, prompt_ids, c, f) for c, f in zip(completions, flags)])
        expected_after = [_reference(trainer.model, prompt_ids, c, f)[0] for c, f in zip(completions, flags)]
        assert rows["logp_before"].tolist() == pytest.approx(list(expected_before), abs=2e-3)
        assert rows["logp_after"].tolist() == pytest.approx(expected_after, abs=2e-3)
        assert not any(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(expected_before, expected_after))
        # NTHR: M+, anchors, V* and the selection over the measured tokens only (float64 brute force)
        correct = torch.tensor(rows["correct"].astype(bool).tolist())
        scores, anchors = brute_nthr(torch.stack(hidden), unembed, torch.tensor(completions), measured, correct,
                                     vocab="group")
        tau = float(anchors[correct].min())
        got_scores = torch.tensor(group_tokens["nthr_score"].to_numpy(), dtype=torch.float64).view(GROUP, -1)
        torch.testing.assert_close(got_scores[measured], scores[measured], rtol=2e-3, atol=1e-3)
        assert got_scores[~measured].isnan().all()
        selected = torch.tensor(group_tokens["nthr_selected"].tolist()).view(GROUP, -1)
        expected = measured & ~correct[:, None] & (scores > tau)
        clear = (scores - tau).abs() > 1e-3 * max(1.0, abs(tau))
        assert torch.equal(selected[clear], expected[clear]) and not (selected & ~measured).any()
    probe_set = store.probe_set
    assert len(probe_set) and (probe_set["n_tokens"] == 7).all()


@pytest.mark.integration
def test_the_token_dump_records_the_tool_mask_and_rescoring_measures_the_models_tokens_only(tmp_path):
    import pandas as pd
    from trl import GRPOConfig, GRPOTrainer

    from lld_probe.integrations.trl import add_token_dump
    from lld_probe.integrations.trl.run import build_dataset
    from lld_probe.rescore import rescore
    from lld_probe.tasks import get_task

    torch.manual_seed(0)
    model, tokenizer = load_model("tiny")
    before = copy.deepcopy(model)
    masks: dict = {}
    config = GRPOConfig(output_dir=str(tmp_path / "plain"), num_generations=GROUP, per_device_train_batch_size=8,
                        max_completion_length=12, max_steps=1, learning_rate=1e-2, use_cpu=True, bf16=False,
                        report_to=[], save_strategy="steps", save_steps=1, disable_tqdm=True, seed=0)
    trainer = GRPOTrainer(model, [_alternating], config, build_dataset(get_task("arithmetic"), tokenizer, 8, seed=0),
                          processing_class=tokenizer, rollout_func=_rollout(masks))
    add_token_dump(trainer)
    trainer.train()
    dump = pd.read_parquet(next((tmp_path / "plain" / "lld_tokens").glob("step=000001*.parquet")))
    for prompt_ids, completion, flags in zip(dump["prompt_ids"], dump["completion_ids"], dump["measured"]):
        assert [int(f) for f in flags] == masks[(tuple(prompt_ids), tuple(completion))]
    rescore(tmp_path / "plain", tmp_path / "store", initial_model="tiny", probe_set_size=2, progress=False)
    store = read_run_store(tmp_path / "store")
    assert (store.responses["tokenization"] == "ids").all() and (store.responses["n_tokens"] == 7).all()
    assert int((~store.tokens["measured"]).sum()) == 8 * len(TOOL)
    for row in store.responses.itertuples():
        tokens = store.tokens[(store.tokens["group_id"] == row.group_id)
                              & (store.tokens["response_index"] == row.response_index)].sort_values("position")
        prompt_ids = tokenizer(text=row.prompt)["input_ids"]
        completion = tokens["token_id"].tolist()
        flags = masks[(tuple(prompt_ids), tuple(completion))]
        assert tokens["measured"].tolist() == [bool(f) for f in flags]
        assert row.logp_before == pytest.approx(_reference(before, prompt_ids, completion, flags)[0], abs=2e-3)
        assert row.logp_after == pytest.approx(_reference(trainer.model, prompt_ids, completion, flags)[0], abs=2e-3)
