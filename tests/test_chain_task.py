import random

import pytest

from lld_probe.models.train_chain import mistaken_steps, training_example
from lld_probe.tasks import ChainTask, get_task
from lld_probe.tasks.chain import MAX_VALUE, STYLES, chain_steps, write_solution


def test_chain_questions_are_seeded_split_and_solvable():
    task = ChainTask(3)
    assert task.questions(20, seed=3) == task.questions(20, seed=3)
    assert task.questions(20, seed=3) != task.questions(20, seed=4)
    train = {q.question_id for q in task.questions(300, seed=0)}
    held_out = {q.question_id for q in task.questions(300, seed=0, split="eval")}
    assert len(train) == len(held_out) == 300 and not train & held_out
    for question in task.questions(50, seed=1):
        start, operations = task.parse(question)
        steps = chain_steps(start, operations)
        assert len(steps) == 3 and all(0 <= result <= MAX_VALUE for *_, result in steps)
        assert str(steps[-1][3]) == question.answer
        assert task.reward(task.solution(question), question.answer).reward == 1.0
    assert get_task("chain").steps == 3 and get_task("chain4").steps == 4
    with pytest.raises(ValueError, match="steps"):
        ChainTask(0)


def test_solution_format_and_reward_on_the_final_answer():
    steps = chain_steps(3, [("+", 4), ("*", 2), ("-", 5)])
    assert write_solution(steps) == " 3+4=7, 7*2=14, 14-5=9. The answer is 9."
    assert write_solution(steps, 3) == " 3 plus 4 is 7, 7 times 2 is 14, 14 minus 5 is 9. The answer is 9."
    with pytest.raises(ValueError, match="style"):
        write_solution(steps, len(STYLES))
    task = ChainTask(3)
    assert task.reward(" 3+4=7, 7*2=14, 14-5=9. The answer is 9.", "9").reward == 1.0
    assert task.reward(" 3+4=7, 7*2=15, 15-5=10. The answer is 10.", "9").reward == 0.0
    wrong_step_right_answer = task.reward(" 3+4=8, 8*2=14, 14-5=9. The answer is 9.", "9")
    assert wrong_step_right_answer.reward == 1.0 and wrong_step_right_answer.parsed == "9"   # outcome reward only
    assert task.reward(" 3+4=7, 7*2=14, 14-5=", "9").reward == 0.0                           # truncated


def test_mistakes_share_the_text_and_carry_on():
    task = ChainTask(3)
    rng = random.Random(0)
    differing = 0
    for question in task.questions(40, seed=0):
        start, operations = task.parse(question)
        right = chain_steps(start, operations)
        wrong = mistaken_steps(start, operations, rng)
        changed = [index for index, (a, b) in enumerate(zip(right, wrong)) if a != b]
        assert changed and right[: changed[0]] == wrong[: changed[0]]          # same text up to the mistake
        for left, op, operand, result in wrong[changed[0] + 1:]:              # carried on consistently
            assert result == {"+": left + operand, "-": left - operand, "*": left * operand}[op]
        differing += wrong[-1][3] != right[-1][3]
    assert differing >= 30
    question = task.questions(1, seed=0)[0]
    texts = [training_example(task, question, random.Random(seed), 0.5) for seed in range(40)]
    correct = {task.solution(question, style) for style in range(len(STYLES))}
    assert len(set(texts) & correct) == len(STYLES) and sum(t in correct for t in texts) >= 10
    assert sum(task.reward(t, question.answer).reward for t in texts) < 40
