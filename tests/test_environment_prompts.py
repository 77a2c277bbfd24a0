"""TRL's environment_factory: a data set without a prompt column, prompts from env.reset(). The store holds
the prompts TRL generated from and stable question ids. The environment here has no tools (only reset), so
its completions have prefix masks."""

from __future__ import annotations

import pytest

from lld_probe.integrations.trl.adapter import _prompt_id
from lld_probe.store.run_store import read_run_store

# renders user turns as the tiny model was trained ("QUESTION\nAnswer:"), and tool calls and tool results so that
# TRL accepts it for environment_factory
TEMPLATE = ("{%- for m in messages -%}"
            "{%- if m.role == 'assistant' -%}{{ m.content }}"
            "{%- for c in m.tool_calls or [] -%} {{ c.function.name }}{{ c.function.arguments | tojson }}{%- endfor -%}"
            "{%- elif m.role == 'tool' -%} {{ m.name }}: {{ m.content }}"
            "{%- else -%}{{ m.content }}{%- endif -%}"
            "{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{ '\\nAnswer:' }}{%- endif -%}")


class QuestionEnvironment:
    """Poses the row's question at reset and names it (question_id); no tools."""

    def reset(self, question, qid=None, **row):
        self.question_id = qid
        return question


def _trainer(tmp_path, columns, environment=QuestionEnvironment):
    from datasets import Dataset

    from lld_probe.integrations.trl import LLDConfig, LLDGRPOTrainer
    from lld_probe.integrations.trl.run import reward_function
    from lld_probe.models import load_model
    from lld_probe.tasks import get_task
    model, tokenizer = load_model("tiny")
    tokenizer.chat_template = TEMPLATE
    task = get_task("arithmetic")
    questions = task.questions(4, seed=0)
    data = {"question": [q.prompt for q in questions], "answer": [q.answer for q in questions],
            "qid": [f"env-{q.question_id}" for q in questions],
            "question_id": [f"data-{q.question_id}" for q in questions]}
    config = LLDConfig(output_dir=str(tmp_path / "env"), method="nthr", num_generations=4,
                       per_device_train_batch_size=8, max_completion_length=6, max_steps=2, use_cpu=True, bf16=False,
                       report_to=[], disable_tqdm=True, save_strategy="no", probe_set_size=0, logging_steps=1)
    dataset = Dataset.from_dict({name: data[name] for name in columns})
    trainer = LLDGRPOTrainer(model=model, args=config, reward_funcs=[reward_function(task)], train_dataset=dataset,
                             processing_class=tokenizer, environment_factory=environment)
    return trainer, questions


@pytest.mark.integration
def test_environment_prompts_and_question_ids_reach_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    trainer, questions = _trainer(tmp_path, ["question", "answer", "qid"])
    trainer.train()
    responses = read_run_store(tmp_path / "env").responses
    assert sorted(responses["step"].unique()) == [1, 2] and len(responses) == 2 * 8
    posed = {f"env-{q.question_id}": q.prompt + "\nAnswer:" for q in questions}
    # the prompt TRL generated from (reset's question, in the chat template), under the environment's question id
    assert [posed[qid] for qid in responses["question_id"]] == list(responses["prompt"])
    assert responses.groupby("prompt")["question_id"].nunique().eq(1).all()

    # the data set's question_id wins over the environment's; without either, a digest of the prompt
    rows = [{"question": "1+1=?", "qid": "env-a", "question_id": "data-a"}, {"question": "2+2=?", "qid": "env-b"},
            {"question": "3+3=?"}]
    environments = [QuestionEnvironment() for _ in rows]
    for environment, row in zip(environments, rows):
        environment.reset(**row)
    trainer.environments = environments
    ids = [trainer.processing_class(row["question"] + "\nAnswer:")["input_ids"] for row in rows]
    prompts, question_ids = trainer._lld_prompts(rows, ids)
    assert prompts == [row["question"] + "\nAnswer:" for row in rows]
    assert question_ids == ["data-a", "env-b", _prompt_id("3+3=?\nAnswer:")]
