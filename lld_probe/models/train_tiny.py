"""Regenerate the "tiny" model in data/tiny: supervised warm-up on the arithmetic task (train split),
stopped while still imperfect so that most groups of 8 samples at temperature 1.0 are mixed.

    python -m lld_probe.models.train_tiny [--out data/tiny] [--seed 0]

Deterministic for a given seed on one machine and torch version (two threads); about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from ..tasks import ArithmeticTask, format_prompt
from .warmup import completion_only_step, sampled_accuracy, save_warmed_model
from .tiny import TINY_DIR, build_config, build_tokenizer

TEMPLATES = [" {c}", " The answer is {c}.", " {e} = {c}", " It is {c}."]


def training_pairs(task: ArithmeticTask, tokenizer, seed: int) -> list[tuple[str, str]]:
    """(prompt, completion + eos) for every train-split question and answer template."""
    pairs = []
    for question in task.questions(1000, seed=seed, split="train"):
        expression = question.question_id.split(":", 1)[1]
        for template in TEMPLATES:
            completion = template.format(c=question.answer, e=expression)
            pairs.append((format_prompt(tokenizer, question.prompt), completion + tokenizer.eos_token))
    return pairs


def train(out: Path = TINY_DIR, seed: int = 0, target_accuracy: float = 0.5, max_steps: int = 600,
          batch_size: int = 32, lr: float = 1e-3) -> dict:
    torch.manual_seed(seed)
    random.seed(seed)
    torch.set_num_threads(2)
    from transformers import Qwen2ForCausalLM

    task = ArithmeticTask(1)
    tokenizer = build_tokenizer()
    model = Qwen2ForCausalLM(build_config(tokenizer))
    pairs = training_pairs(task, tokenizer, seed)
    probe_questions = task.questions(32, seed=seed + 1, split="train")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    log, start = [], time.time()
    for step in range(1, max_steps + 1):
        chosen = rng.sample(pairs, batch_size)
        loss = completion_only_step(model, tokenizer, optimizer, [p for p, _ in chosen], [c for _, c in chosen])
        if step % 20 == 0:
            accuracy, mixed = sampled_accuracy(model, tokenizer, task, probe_questions, seed, max_new_tokens=24,
                                               engine="hf", batch_prompts=32)
            log.append({"step": step, "loss": round(loss.item(), 4), "sampled_accuracy": accuracy,
                        "mixed_share": mixed, "seconds": round(time.time() - start, 1)})
            print(log[-1], flush=True)
            if accuracy >= target_accuracy:
                break
    return save_warmed_model(model, tokenizer, out, {"seed": seed, "steps": step,
                                                     "target_sampled_accuracy": target_accuracy, "log": log})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=TINY_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-accuracy", type=float, default=0.5)
    args = parser.parse_args(argv)
    info = train(args.out, args.seed, args.target_accuracy)
    print(f"saved {info['parameters']} parameters after {info['steps']} steps to {args.out}")


if __name__ == "__main__":
    main()
