import json

import pandas as pd
import pytest
import torch

from lld_probe.analysis.protocol_report import write_protocol_report
from lld_probe.models import load_model
from lld_probe.protocol import question as protocol_module
from lld_probe.protocol import PROTOCOL_COLUMNS, ProtocolConfig, run_protocol, save_protocol
from lld_probe.core import method_token_advantages

CONFIG = ProtocolConfig(model="tiny", questions=6, seed=0, max_new_tokens=16)


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    model, tokenizer = tiny
    checksums = []
    real = protocol_module._make_optimizer

    def recording(name, parameters, lr):
        parameters = list(parameters)
        checksums.append(float(sum(p.detach().double().sum() for p in parameters)))
        return real(name, parameters, lr)

    protocol_module._make_optimizer = recording
    base = float(sum(p.detach().double().sum() for p in model.parameters()))
    try:
        result = run_protocol(CONFIG, model=model, tokenizer=tokenizer, progress=False)
    finally:
        protocol_module._make_optimizer = real
    out = tmp_path_factory.mktemp("protocol")
    save_protocol(result, out)
    return result, out, checksums, base


def test_file_contract(run):
    result, out, _, _ = run
    protocol = pd.read_parquet(out / "protocol.parquet")
    assert list(protocol.columns) == PROTOCOL_COLUMNS
    kept = int(result.questions["mixed"].sum())
    assert kept >= 3 and len(protocol) == 4 * kept
    assert set(protocol["method"]) == {"grpo", "pos_only", "random", "nthr"}
    responses = pd.read_parquet(out / "responses.parquet")
    assert len(responses) == 4 * kept * 8
    for column in ("question_id", "method", "response_index", "correct", "n_tokens", "logp_before",
                   "logp_after", "scaled_fraction"):
        assert column in responses
    tokens = pd.read_parquet(out / "tokens.parquet")
    assert {"nthr_score", "nthr_selected", "token_id", "position"} <= set(tokens.columns)
    assert len(tokens) == responses[responses["method"] == "grpo"]["n_tokens"].sum()
    assert not tokens[tokens["correct"]]["nthr_selected"].any()          # selections touch incorrect responses only
    meta = json.loads((out / "meta.json").read_text())
    assert meta["settings"]["lr"] == 1e-3 and meta["questions_mixed"] == kept
    assert meta["versions"]["torch"]


def test_every_method_starts_from_the_base_parameters(run, tiny):
    _, _, checksums, base = run
    assert len(checksums) == 4 * int(run[0].questions["mixed"].sum())
    assert all(value == base for value in checksums)
    model, _ = tiny
    assert float(sum(p.detach().double().sum() for p in model.parameters())) == base


def test_delta_is_the_mean_over_correct_responses(run):
    _, out, _, _ = run
    protocol = pd.read_parquet(out / "protocol.parquet")
    responses = pd.read_parquet(out / "responses.parquet")
    for _, row in protocol.iterrows():
        group = responses[(responses["question_id"] == row["question_id"]) & (responses["method"] == row["method"])]
        correct = group[group["correct"]]
        assert row["delta_sum"] == pytest.approx((correct["logp_after"] - correct["logp_before"]).mean(), abs=1e-9)
        assert row["n_correct"] == len(correct)
        assert row["delta_mean"] == pytest.approx(((correct["logp_after"] - correct["logp_before"]) / correct["n_tokens"]).mean(), abs=1e-9)


def test_random_matches_nthr_counts_and_grpo_pos_only_select_nothing(run):
    _, out, _, _ = run
    responses = pd.read_parquet(out / "responses.parquet")
    wide = responses.pivot_table(index=["question_id", "response_index"], columns="method", values="scaled_fraction")
    assert (wide["random"] - wide["nthr"]).abs().max() < 1e-12
    assert (wide["grpo"] == 0).all() and (wide["pos_only"] == 0).all()


def test_method_advantages():
    advantages = torch.tensor([1.0, -0.5, -0.5])
    mask = torch.ones(3, 4, dtype=torch.bool)
    correct = torch.tensor([True, False, False])
    selected = torch.zeros(3, 4, dtype=torch.bool)
    selected[1, :2] = True
    pos, _ = method_token_advantages("pos_only", advantages, mask, correct, selected, "zero")
    assert (pos >= 0).all() and (pos[1:] == 0).all()
    nthr, scaled = method_token_advantages("nthr", advantages, mask, correct, selected, "zero")
    assert nthr[1].tolist() == [0, 0, -0.5, -0.5] and scaled.equal(selected)
    random, scaled = method_token_advantages("random", advantages, mask, correct, selected, 0.5, seed=1)
    assert scaled.sum(1).tolist() == [0, 2, 0]
    assert sorted(random[1].tolist()) == [-0.5, -0.5, -0.25, -0.25]


@pytest.mark.integration
def test_same_seed_gives_identical_protocol(run, tiny):
    model, tokenizer = tiny
    again = run_protocol(CONFIG, model=model, tokenizer=tokenizer, progress=False)
    pd.testing.assert_frame_equal(again.protocol, run[0].protocol)


@pytest.mark.integration
def test_report_and_figures(run):
    _, out, _, _ = run
    written = write_protocol_report(out)
    names = {p.name for p in written}
    assert {"summary.md", "table1.md", "fig1_delta_grpo_vs_pos_only.png", "fig4_delta_grpo_random_nthr.pdf",
            "predicted_vs_measured.png", "fig3_token_scores.png", "fig3_token_scores.html"} <= names
    assert all(p.stat().st_size > 0 for p in written)
    assert "Table 1" in (out / "summary.md").read_text()


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="methods"):
        ProtocolConfig(methods=["grpo", "dpo"]).resolved()
    with pytest.raises(ValueError, match="optimizer"):
        ProtocolConfig(optimizer="lion").resolved()
    with pytest.raises(ValueError, match="group_size"):
        ProtocolConfig(group_size=1).resolved()
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N, got 'gpu0'"):
        ProtocolConfig(device="gpu0").resolved()


def test_device_auto_is_the_gpu_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ProtocolConfig().resolved().device == "cpu"
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        ProtocolConfig(device="cuda:1").resolved()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert ProtocolConfig().resolved().device == "cuda"
    assert ProtocolConfig(device="cuda:1").resolved().device == "cuda:1"
    with pytest.raises(ValueError, match="'cuda:2' was asked for but torch sees 2 CUDA GPU"):
        ProtocolConfig(device="cuda:2").resolved()


def test_bf16_compute_copy_keeps_a_float32_master(tiny):
    from dataclasses import replace
    model, tokenizer = tiny
    before = {name: value.clone() for name, value in model.state_dict().items()}
    result = run_protocol(replace(CONFIG, bf16=True, methods=["grpo", "nthr"], fresh_samples=0), model=model,
                          tokenizer=tokenizer, progress=False)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert len(result.protocol) and result.protocol["delta_sum"].notna().all()
    assert (result.protocol["delta_sum"] != 0).all()          # the bf16 gradient reached the float32 master
    assert result.config.bf16


@pytest.mark.parametrize("method", ["grpo", "nthr", "pos_only"])
def test_shared_forward_updates_equal_an_independent_one_step_update(run, tiny, method):
    """The protocol takes the methods' gradients from forwards of the correct and incorrect rows at the
    base point, sharing backwards between methods (and scores groups with their prompt computed once);
    a plain forward, backward and SGD step of the whole group on a copy must agree."""
    import copy

    from lld_probe.core import group_advantages, sequence_logprob
    from lld_probe.scoring import build_group_batch, forward_logps
    from lld_probe.tasks import format_prompt, get_task
    from lld_probe.protocol.loss import clipped_surrogate_loss
    result, out, _, _ = run
    model, tokenizer = tiny
    responses = pd.read_parquet(out / "responses.parquet")
    tokens = pd.read_parquet(out / "tokens.parquet")
    question_id = result.protocol["question_id"].iloc[0]
    question = next(q for q in get_task(CONFIG.task).questions(CONFIG.questions, seed=CONFIG.seed)
                    if q.question_id == question_id)
    prompt_ids = tokenizer(format_prompt(tokenizer, question.prompt), add_special_tokens=False)["input_ids"]
    rows = tokens[tokens["question_id"] == question_id].sort_values(["response_index", "position"])
    completions = [group["token_id"].tolist() for _, group in rows.groupby("response_index", sort=True)]
    batch = build_group_batch([prompt_ids] * len(completions), completions, tokenizer.pad_token_id)
    grpo = responses[(responses["question_id"] == question_id) & (responses["method"] == method)]
    grpo = grpo.sort_values("response_index")
    correct = torch.tensor(grpo["correct"].to_numpy())
    selected = torch.zeros_like(batch.mask)
    for (response, position), value in rows.set_index(["response_index", "position"])["nthr_selected"].items():
        selected[response, position] = bool(value)
    per_token, _ = method_token_advantages(method, group_advantages(correct.float(), len(completions)),
                                            batch.mask, correct, selected, "zero")
    assert method != "nthr" or selected.any()        # NTHR differs from GRPO on this question
    updated = copy.deepcopy(model).eval()
    scored = forward_logps(updated, batch, layout="rows")
    clipped_surrogate_loss(scored.token_logps, scored.token_logps.detach(), per_token, batch.mask).backward()
    torch.optim.SGD(updated.parameters(), lr=CONFIG.resolved().lr).step()
    with torch.no_grad():
        after = sequence_logprob(forward_logps(updated, batch, layout="rows").token_logps, batch.mask)
    assert sequence_logprob(scored.token_logps.detach(), batch.mask).numpy() == \
        pytest.approx(grpo["logp_before"].to_numpy(), abs=1e-4)
    assert after.numpy() == pytest.approx(grpo["logp_after"].to_numpy(), abs=1e-4)


def test_mixed_stops_once_enough_mixed_groups_are_kept(tiny):
    model, tokenizer = tiny
    result = run_protocol(ProtocolConfig(model="tiny", questions=6, mixed=2, seed=0, max_new_tokens=16,
                                         methods=["grpo"], fresh_samples=0), model=model, tokenizer=tokenizer,
                          progress=False)
    assert int(result.questions["mixed"].sum()) == 2 and bool(result.questions["mixed"].iloc[-1])
    assert set(result.protocol["question_id"]) == set(result.questions.loc[result.questions["mixed"], "question_id"])
    with pytest.raises(ValueError, match="mixed must be between 1 and questions"):
        ProtocolConfig(questions=4, mixed=5).resolved()
