import json

import pytest

from lld_probe.models import NAMED_MODELS, load_model, sample_groups
from lld_probe.models.chain import CHAIN_DIR
from lld_probe.tasks import format_prompt, get_task
from lld_probe.protocol import ProtocolConfig, run_protocol


@pytest.fixture(scope="module")
def chain():
    return load_model("chain")


def test_chain_model_ships_with_its_recipe(chain):
    model, tokenizer = chain
    assert "chain" in NAMED_MODELS
    info = json.loads((CHAIN_DIR / "training.json").read_text())
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["log"][-1]["sampled_accuracy"] >= info["target_sampled_accuracy"]
    assert sum(f.stat().st_size for f in CHAIN_DIR.iterdir()) < 10_000_000
    assert tokenizer.decode(tokenizer("3+4=7, 7*2=14.")["input_ids"]) == "3+4=7, 7*2=14."


def test_chain_groups_are_mixed_and_share_text(chain):
    model, tokenizer = chain
    task = get_task("chain")
    questions = task.questions(4, seed=0)
    groups = sample_groups(model, tokenizer, [format_prompt(tokenizer, q.prompt) for q in questions], group_size=8,
                           max_new_tokens=96, seed=0, batch_prompts=4)
    mixed = 0
    for question, group in zip(questions, groups):
        rewards = [task.reward(c.text, question.answer).reward for c in group]
        mixed += 0 < sum(rewards) < 8
        assert all(c.text.strip() for c in group)
    assert mixed >= 2


def test_protocol_runs_on_the_testbed(chain):
    model, tokenizer = chain
    result = run_protocol(ProtocolConfig(model="chain", task="chain", questions=4, mixed=2, fresh_samples=0,
                                         optimizer="adamw", lr=1e-4, methods=["grpo", "pos_only"]),
                          model=model, tokenizer=tokenizer, progress=False)
    assert result.config.max_new_tokens == 96
    assert len(result.protocol) == 4 and result.protocol["delta_sum"].notna().all()


@pytest.mark.integration
def test_cli_runs_both_optimizers_side_by_side(tmp_path, capsys):
    from lld_probe.cli import main
    assert main(["protocol", "--model", "chain", "--task", "chain", "--questions", "4", "--mixed", "2",
                 "--methods", "grpo,pos_only,nthr", "--fresh-samples", "0", "--optimizer", "adamw,sgd",
                 "--lr", "1e-4,1e-3", "--out", str(tmp_path)]) == 0
    comparison = (tmp_path / "comparison.md").read_text()
    assert "adamw lr 0.0001" in comparison and "sgd lr 0.001" in comparison
    summary = (tmp_path / "adamw" / "summary.md").read_text()
    assert "Where LLD lives" in summary and "NTHR's selected tokens" in summary
    assert (tmp_path / "sgd" / "figures" / "lld_vs_length.png").is_file()
    assert main(["protocol", "--optimizer", "adamw,lion", "--out", str(tmp_path / "x")]) == 2
    assert "--optimizer must be" in capsys.readouterr().err
