import json

import pytest

from lld_probe.tasks import (ArithmeticTask, answers_match, extract_answer, get_task, last_number,
                             load_questions_jsonl, math_reward)
from lld_probe.tasks.eval_set import load_eval_set


@pytest.mark.parametrize("text, expected", [
    ("The answer is 7.", "7"),
    ("3 + 4 = 7", "7"),
    ("It costs 1,234 dollars", "1234"),
    ("so x = -3.", "-3"),
    ("about 2.5!", "2.5"),
    ("ratio 3/4", "3/4"),
    ("no number here", None),
    ("7, then 8,", "8"),
])
def test_last_number(text, expected):
    assert last_number(text) == expected


@pytest.mark.parametrize("completion, answer, reward", [
    (r"Thus \boxed{\frac{1}{2}}.", "0.5", 1.0),
    (r"\boxed{\dfrac{3}{4}}", r"\frac{3}{4}", 1.0),
    (r"\boxed{x^{2}+1} and later 5", "x^{2}+1", 1.0),
    ("Answer: 1,000", "1000", 1.0),
    ("The answer is -12.", "-12", 1.0),
    ("The answer is $5$.", "5", 1.0),
    ("First 3, so the total is 9", "9", 1.0),
    ("I think 8", "9", 0.0),
    (r"\boxed{\text{(B)}}", "(b)", 1.0),
    ("", "1", 0.0),
])
def test_math_reward(completion, answer, reward):
    assert math_reward(completion, answer)[0] == reward


def test_parsed_answer_is_recorded():
    result = ArithmeticTask(1).reward(" The answer is 12.", "12")
    assert result.reward == 1.0 and result.parsed == "12"
    assert ArithmeticTask(1).reward(" It is 1", "12").parsed == "1"
    assert extract_answer(r"\boxed{12}", mode="boxed") == "12"
    assert not answers_match(None, "1")


def test_arithmetic_questions_are_seeded_and_split():
    task = ArithmeticTask(1)
    assert task.questions(10, seed=4) == task.questions(10, seed=4)
    assert task.questions(10, seed=4) != task.questions(10, seed=5)
    train = {q.question_id for q in task.questions(100, seed=0)}
    held_out = {q.question_id for q in task.questions(100, seed=0, split="eval")}
    assert len(train) + len(held_out) == 100 and not train & held_out
    assert {q.question_id for q in load_eval_set()} == held_out
    for level in (2, 3):
        for question in ArithmeticTask(level).questions(5, seed=1):
            assert eval(question.question_id.split(":", 1)[1]) == int(question.answer)
    with pytest.raises(ValueError, match="level"):
        ArithmeticTask(4)


def test_jsonl_loader(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"prompt": "1+1?", "answer": 2}) + "\n\n" + json.dumps({"question_id": "b", "prompt": "2+2?", "answer": "4"}) + "\n")
    questions = load_questions_jsonl(path)
    assert [q.question_id for q in questions] == ["line-1", "b"] and questions[0].answer == "2"
    assert get_task(str(path)).reward(r"\boxed{4}", "4").reward == 1.0


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "x", "answer": 1}\n{"prompt": "y"\n', r"q.jsonl:2: not valid JSON"),
    ('{"prompt": "x"}\n', r"q.jsonl:1: missing key\(s\) answer"),
    ('[1, 2]\n', r"q.jsonl:1: expected a JSON object"),
    ('{"prompt": "", "answer": 1}\n', r"q.jsonl:1: prompt must be a non-empty string"),
    ('{"question_id": "a", "prompt": "x", "answer": 1}\n{"question_id": "a", "prompt": "y", "answer": 2}\n', r"q.jsonl:2: duplicate question_id"),
    ('\n', r"no questions"),
])
def test_jsonl_loader_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "q.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_questions_jsonl(path)


def test_unknown_task_is_an_error():
    with pytest.raises(ValueError, match="task"):
        get_task("gsm8k")
