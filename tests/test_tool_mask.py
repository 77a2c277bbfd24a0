"""Tokens the policy did not write (a tool's or an environment's output inside a multi-turn completion: TRL's
tool_mask / env_mask 0) stay in the sequence as context but are never measured: outside logp_before,
logp_after, NTHR's M+, anchors, tau and selection, the random control and every metric; marked in the token
rows. Checked against an independent float64 recomputation over full rows of the tiny model."""

from __future__ import annotations

import math
import tempfile

import pytest
import torch

from brute import nthr as brute_nthr
from lld_probe.models import load_model
from lld_probe.probes import ProbeRecorder, ProbeSettings
from lld_probe.scoring import build_group_batch, output_embedding_weight, score_group
from lld_probe.store.run_store import read_run_store

TOOL = [7, 7, 9, 11, 5]          # a fixed "tool output" inserted into completions


def _group(vocab: int, seed: int = 0):
    """4 responses of one prompt: tool tokens inside responses 0 and 2 (correct 0, 1; incorrect 2, 3), and
    response 3 made entirely of tool output (nothing measured)."""
    generator = torch.Generator().manual_seed(seed)

    def draw(n):
        return torch.randint(3, vocab, (n,), generator=generator).tolist()

    prompt = draw(5)
    parts = [(draw(4), TOOL, draw(3)), (draw(6), [], []), (draw(3), TOOL, draw(4)), ([], TOOL, [])]
    completions = [a + b + c for a, b, c in parts]
    measured = [[True] * len(a) + [False] * len(b) + [True] * len(c) for a, b, c in parts]
    return prompt, completions, measured


def _reference(model, prompt, completions, measured):
    """Per response (float64): full-row forward, log pi(y_t) read at the state of position t-1, summed over
    the measured tokens only; and the lm_head inputs that predict each completion token [B, T, d]."""
    states = []
    hook = model.get_output_embeddings().register_forward_pre_hook(lambda module, args: states.append(args[0]))
    sums, hidden = [], torch.zeros(len(completions), max(map(len, completions)), model.config.hidden_size,
                                   dtype=torch.float64)
    try:
        with torch.no_grad():
            for row, (completion, flags) in enumerate(zip(completions, measured)):
                states.clear()
                ids = torch.tensor([prompt + completion])
                logits = model(input_ids=ids).logits[0].double()
                logps = torch.log_softmax(logits, -1)
                total, start = 0.0, len(prompt)
                for j, (token, flag) in enumerate(zip(completion, flags)):
                    position = start + j                       # token at `position` is predicted by position - 1
                    assert ids[0, position] == token
                    if flag:
                        total += float(logps[position - 1, token])
                    hidden[row, j] = states[0][0, position - 1].double()
                sums.append(total if any(flags) else math.nan)
    finally:
        hook.remove()
    return torch.tensor(sums, dtype=torch.float64), hidden


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = load_model("tiny")
    model.eval()
    return model, tokenizer


def _run(model, method: str, store: str):
    prompt, completions, measured = _group(model.config.vocab_size)
    settings = ProbeSettings(method=method, nthr_eta="0.5", nthr_beta=0.5, probe_set_size=0)
    recorder = ProbeRecorder(settings, store, temperature=1.0, pad_id=0)
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0])
    generation = recorder.begin_batch(1, [prompt] * 4, completions, rewards=rewards, deciding_rewards=rewards,
                                      advantages=torch.tensor([1.0, 1.0, -1.0, -1.0]), group_size=4,
                                      prompts=["p"] * 4, completions=["a", "b", "c", "d"], question_ids=["q"] * 4,
                                      measured=measured)
    scored = score_group(model, generation.batch, with_hidden=True, with_entropy=True)
    probed = recorder.score_old_policy(generation, scored.token_logps, scored.entropy, scored.hidden,
                                       output_embedding_weight(model))
    return recorder, probed, (prompt, completions, measured)


def test_tool_tokens_are_context_but_never_measured(tiny):
    model, _ = tiny
    with tempfile.TemporaryDirectory() as store:
        recorder, probed, (prompt, completions, measured) = _run(model, "nthr", store)
        batch = probed.generation.batch
        flags = batch.measured
        assert flags.sum(1).tolist() == [7, 6, 7, 0] and batch.mask.sum(1).tolist() == [12, 6, 12, 5]
        logp_before, hidden = _reference(model, prompt, completions, measured)
        torch.testing.assert_close(probed.old.logp_before.double(), logp_before, rtol=1e-5, atol=1e-4, equal_nan=True)
        # the tool tokens condition what follows: without them the later tokens' likelihood is another number
        bare = [[t for t, f in zip(c, m) if f] for c, m in zip(completions, measured)]
        without, _ = _reference(model, prompt, bare, [[True] * len(c) for c in bare])
        assert abs(float(without[0] - logp_before[0])) > 1e-3
        # NTHR recomputed in float64 with M+, anchors, scores and V* (the probes' default vocab) over the
        # measured tokens only
        correct = torch.tensor([True, True, False, False])
        scores, anchors = brute_nthr(hidden, output_embedding_weight(model).detach().double(), batch.tokens, flags,
                                     correct, vocab="group")
        torch.testing.assert_close(probed.old.scores.double()[flags], scores[flags], rtol=1e-3, atol=1e-4)
        assert not probed.old.scores[~flags].any() and not probed.old.token_logps[~flags].any()
        tau = 0.5 * float(anchors[correct].min())
        assert probed.old.taus[0] == pytest.approx(tau, rel=1e-3, abs=1e-5)
        expected = flags & ~correct[:, None] & (scores > tau)
        clear = (scores - tau).abs() > 1e-4 * max(1.0, abs(tau))
        assert torch.equal(probed.old.nthr_selected[clear], expected[clear])
        assert not (probed.old.nthr_selected & ~flags).any() and not (probed.scaled & ~flags).any()
        assert not probed.loss_advantages[~flags & batch.mask].any()      # the loss masks them anyway: 0 here
        # after an update: logp_after over the measured tokens again; the all-tool response is left out
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(1.01)
        try:
            record = recorder.finish_step(model)
            after, _ = _reference(model, prompt, completions, measured)
        finally:
            with torch.no_grad():
                model.get_output_embeddings().weight.div_(1.01)
        responses = record.responses
        torch.testing.assert_close(torch.tensor(responses["logp_after"].to_numpy()), after, rtol=1e-5, atol=1e-4,
                                   equal_nan=True)
        assert responses["n_tokens"].tolist() == [7, 6, 7, 0]
        assert math.isnan(responses["logp_before"][3]) and math.isnan(responses["logp_after"][3])
        assert record.metrics["lld/left_out"] == 1.0
        assert record.metrics["lld/mean_length"] == pytest.approx(20 / 3)
        tokens = record.tokens
        assert len(tokens) == 12 + 6 + 12 + 5
        tool = tokens[~tokens["measured"]]
        assert len(tool) == 15 and tool[["logp_before", "logp_after", "nthr_score", "entropy"]].isna().all().all()
        assert not tool["nthr_selected"].any() and not tool["scaled"].any()
        assert tokens[tokens["measured"]][["logp_before", "logp_after"]].notna().all().all()


def test_random_control_draws_among_measured_tokens_with_nthr_counts(tiny):
    model, _ = tiny
    with tempfile.TemporaryDirectory() as store:
        _, probed, _ = _run(model, "random", store)
        flags = probed.generation.batch.measured
        assert torch.equal(probed.scaled.sum(1), probed.old.nthr_selected.sum(1))
        assert not (probed.scaled & ~flags).any()


def test_old_stores_read_every_token_as_measured(tmp_path):
    from lld_probe.store.run_store import RunStoreWriter
    import pandas as pd
    writer = RunStoreWriter(tmp_path)
    writer.write_meta({"method": "grpo"})
    responses = pd.DataFrame({"step": [1], "question_id": ["q"], "group_id": ["1:0"], "response_index": [0],
                              "prompt": ["p"], "completion": ["c"], "reward": [1.0], "correct": [True],
                              "advantage": [0.0], "n_tokens": [1], "logp_before": [-1.0], "logp_after": [-1.0],
                              "scaled_fraction": [0.0]})
    tokens = pd.DataFrame({"step": [1], "group_id": ["1:0"], "response_index": [0], "token_id": [3], "position": [0],
                           "logp_before": [-1.0], "logp_after": [-1.0], "nthr_score": [0.0], "scaled": [False],
                           "entropy": [0.1]})
    writer.write_step(1, responses, tokens)
    assert read_run_store(tmp_path).tokens["measured"].tolist() == [True]


def test_measured_flags_must_fit_the_completions():
    with pytest.raises(ValueError, match="measured row 0"):
        build_group_batch([[1]], [[2, 3]], 0, [[True]])
