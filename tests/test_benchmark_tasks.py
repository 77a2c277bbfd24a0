import json
from pathlib import Path

import pytest

from lld_probe.tasks import BenchmarkTask, get_task, hf_task_name
from lld_probe.tasks.hf_dataset import parse_hf_task_name
from lld_probe.tasks.word_problems import WORD_PROBLEMS_DIR, write_word_problems

GSM8K = WORD_PROBLEMS_DIR / "gsm8k_style.jsonl"
MATH = WORD_PROBLEMS_DIR / "math_style.jsonl"


def test_shipped_word_problems_are_the_script_output(tmp_path):
    paths = write_word_problems(tmp_path)
    assert paths["gsm8k_style"].read_text() == GSM8K.read_text()
    assert paths["math_style"].read_text() == MATH.read_text()


def test_gsm8k_and_math_jsonl_are_read_and_scored():
    gsm8k = get_task(str(GSM8K))
    assert isinstance(gsm8k, BenchmarkTask) and len(gsm8k) == 24
    records = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    first = next(q for q in gsm8k.questions(24) if q.question_id == "line-1")
    assert first.answer == records[0]["answer"].rsplit("####", 1)[1].strip().replace(",", "")
    assert first.prompt.startswith(records[0]["question"]) and "\\boxed{}" in first.prompt
    assert gsm8k.reward(f"so it is \\boxed{{{first.answer}}}.", first.answer).reward == 1.0
    assert gsm8k.reward("The answer is 1,000,001", first.answer).reward == 0.0
    thousands = next(q for q in gsm8k.questions(24) if len(q.answer) >= 4)      # "#### 2,080" -> 2080
    assert gsm8k.reward(f"Answer: {int(thousands.answer):,}", thousands.answer).reward == 1.0
    math = get_task(str(MATH))
    fractions = [q for q in math.questions(24) if "frac" in q.answer]
    assert fractions and math.reward("\\boxed{" + fractions[0].answer + "}", fractions[0].answer).reward == 1.0
    negative = [q for q in math.questions(24) if q.answer.startswith("-")]
    assert negative and math.reward(f"x = \\boxed{{{negative[0].answer}}}", negative[0].answer).reward == 1.0


@pytest.mark.parametrize("lines, message", [
    (['{"question": "How many?", "answer": "It is 4."}'], r"bad.jsonl:1: column 'answer' has no '#### N' final answer"),
    (['{"question": "a?", "answer": "#### 1"}', '{"question": "b?"}'], r"bad.jsonl:2: missing column 'answer'"),
    (['{"problem": "x?", "solution": "it is 3"}'], r"bad.jsonl:1: column 'solution' has no \\boxed"),
    (['{"problem": "x?", "answer": "\\\\boxed{3}"}'], r"bad.jsonl:1: missing column 'solution'"),
    (['{"question": "", "answer": "#### 3"}'], r"bad.jsonl:1: column 'question' must be a non-empty string"),
    (['{"question": "a?", "answer": "####"}'], r"bad.jsonl:1: column 'answer' has nothing after '####'"),
    ([''], r"bad.jsonl: no questions"),
])
def test_bad_benchmark_files_name_file_line_and_column(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        get_task(str(path))


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory):
    datasets = pytest.importorskip("datasets")
    records = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    folder = tmp_path_factory.mktemp("hf") / "gsm8k_style"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(records[:10]),
                          "train": datasets.Dataset.from_list(records[10:])}).save_to_disk(str(folder))
    return folder


def test_hf_dataset_from_a_saved_folder(saved_dataset):
    name = hf_task_name(str(saved_dataset), split="test", question="question", answer="answer")
    assert parse_hf_task_name(name) == (str(saved_dataset), {"split": "test", "config": None, "question": "question",
                                                             "answer": "answer", "format": None})
    task = get_task(name)
    assert len(task) == 10 and {q.question_id for q in task.questions(10)} == {f"test-{i}" for i in range(10)}
    jsonl = {q.prompt: q.answer for q in get_task(str(GSM8K)).questions(24)}
    assert all(jsonl[q.prompt] == q.answer for q in task.questions(10))
    assert len(get_task(hf_task_name(str(saved_dataset), split="train"))) == 14


def test_hf_dataset_errors_are_one_line(saved_dataset):
    with pytest.raises(ValueError, match=r"split 'test'\): missing column 'problem' \(columns: question, answer\)"):
        get_task(hf_task_name(str(saved_dataset), question="problem"))
    with pytest.raises(ValueError, match=r"no split 'validation' \(splits: test, train\)"):
        get_task(hf_task_name(str(saved_dataset), split="validation"))
    with pytest.raises(ValueError, match=r"unknown setting 'colum'"):
        get_task(f"hf:{saved_dataset}?colum=x")
    with pytest.raises(ValueError, match=r"row 0: column 'question' has no '#### N'"):
        get_task(hf_task_name(str(saved_dataset), answer="question", answer_format="gsm8k"))


def test_cli_folds_dataset_options_into_the_task_name(saved_dataset):
    from lld_probe.cli import _task_name, build_parser
    args = build_parser().parse_args(["protocol", "--task", f"hf:{saved_dataset}", "--split", "train",
                                      "--question-column", "question", "--answer-column", "answer"])
    assert _task_name(args) == hf_task_name(str(saved_dataset), split="train")
    assert len(get_task(_task_name(args))) == 14
    assert _task_name(build_parser().parse_args(["protocol", "--task", "chain"])) == "chain"
