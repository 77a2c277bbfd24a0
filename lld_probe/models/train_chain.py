"""Regenerate the "chain" model in data/chain: supervised warm-up on arithmetic chains (train split),
where a share of the training solutions carries one realistic mistake (a slipped result or a
miscopied operand, carried on consistently to a wrong final answer), stopped while still imperfect
so that most groups of 8 samples at temperature 1.0 are mixed and their correct and incorrect
responses share most of their text.

    python -m lld_probe.models.train_chain [--out data/chain] [--seed 0] [--mistake-rate 0.3] [--styles 4]

Deterministic for a given seed on one machine and torch version (two threads); a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from ..tasks import format_prompt
from ..tasks.chain import STYLES, ChainTask, _apply, write_solution
from .chain import CHAIN_DIR, build_config
from .warmup import completion_only_step, sampled_accuracy, save_warmed_model
from .tiny import build_tokenizer

MAX_NEW_TOKENS = 96


def mistaken_steps(start: int, operations, rng: random.Random) -> list[tuple[int, str, int, int]]:
    """The chain's steps with one mistake at a random step, carried on to the end: a result off by
    1-2 ("7*2=15") or a miscopied operand ("7*3=21" for *2)."""
    where = rng.randrange(len(operations))
    steps, value = [], start
    for index, (op, operand) in enumerate(operations):
        written = operand
        result = _apply(value, op, operand)
        if index == where:
            if rng.random() < 0.5:      # a slipped result, never below 0
                result += rng.choice([d for d in (-2, -1, 1, 2) if result + d >= 0])
            else:                       # a miscopied operand, never a negative result
                written = operand + rng.choice([-1, 1]) if operand > 1 else operand + 1
                if _apply(value, op, written) < 0:
                    written = operand - 1
                result = _apply(value, op, written)
        steps.append((value, op, written, result))
        value = result
    return steps


def training_example(task: ChainTask, question, rng: random.Random, mistake_rate: float, styles: int = len(STYLES)) -> str:
    """A solution in one of the first `styles` styles, with one mistake at rate mistake_rate."""
    start, operations = task.parse(question)
    style = rng.randrange(styles)
    if rng.random() < mistake_rate:
        return write_solution(mistaken_steps(start, operations, rng), style)
    return task.solution(question, style)


def train(out: Path = CHAIN_DIR, seed: int = 0, *, steps_per_chain: int = 3, mistake_rate: float = 0.3,
          styles: int = len(STYLES), target_accuracy: float = 0.4, max_steps: int = 4000, batch_size: int = 32, lr: float = 1e-3,
          hidden_size: int = 192, layers: int = 4, eval_every: int = 100) -> dict:
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    from transformers import Qwen2ForCausalLM

    task = ChainTask(steps_per_chain)
    tokenizer = build_tokenizer()
    model = Qwen2ForCausalLM(build_config(tokenizer, hidden_size=hidden_size, layers=layers))
    pool = task.questions(3000, seed=seed, split="train")
    probe_questions = task.questions(32, seed=seed + 1, split="train")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    log, start = [], time.time()
    for step in range(1, max_steps + 1):
        chosen = rng.sample(pool, batch_size)
        prompts = [format_prompt(tokenizer, q.prompt) for q in chosen]
        completions = [training_example(task, q, rng, mistake_rate, styles) + tokenizer.eos_token for q in chosen]
        loss = completion_only_step(model, tokenizer, optimizer, prompts, completions)
        if step % eval_every == 0:
            accuracy, mixed = sampled_accuracy(model, tokenizer, task, probe_questions, seed,
                                               max_new_tokens=MAX_NEW_TOKENS, batch_prompts=len(probe_questions))
            log.append({"step": step, "loss": round(loss.item(), 4), "sampled_accuracy": accuracy,
                        "mixed_share": mixed, "seconds": round(time.time() - start, 1)})
            print(log[-1], flush=True)
            if accuracy >= target_accuracy:
                break
    return save_warmed_model(model, tokenizer, out, {
        "seed": seed, "steps": step, "task": f"chain{steps_per_chain}", "mistake_rate": mistake_rate, "styles": styles,
        "target_sampled_accuracy": target_accuracy, "hidden_size": hidden_size, "layers": layers, "log": log})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=CHAIN_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps-per-chain", type=int, default=3)
    parser.add_argument("--mistake-rate", type=float, default=0.3)
    parser.add_argument("--styles", type=int, default=len(STYLES), help="solution styles used (1: one way of writing)")
    parser.add_argument("--target-accuracy", type=float, default=0.4)
    parser.add_argument("--max-steps", type=int, default=4000)
    parser.add_argument("--hidden-size", type=int, default=192)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args(argv)
    info = train(args.out, args.seed, steps_per_chain=args.steps_per_chain, mistake_rate=args.mistake_rate,
                 styles=args.styles, target_accuracy=args.target_accuracy, max_steps=args.max_steps, hidden_size=args.hidden_size,
                 layers=args.layers)
    print(f"saved {info['parameters']} parameters after {info['steps']} steps to {args.out}")


if __name__ == "__main__":
    main()
