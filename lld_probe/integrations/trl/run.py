"""Training runs from names: `run_training(TrainSettings(...))` builds the dataset, reward, model and
LLDGRPOTrainer, trains, and leaves a run store in settings.out; `run_compare` does one run per
(method, seed). Used by `lld-probe train` / `lld-probe compare` and by the demo."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ...core import VARIANTS

# per-model defaults measured on this repository's models (README: training comparisons)
MODEL_DEFAULTS = {
    "tiny": {"learning_rate": 1e-4, "max_completion_length": 24},
    "smollm2": {"learning_rate": 5e-6, "max_completion_length": 48},
}


@dataclass
class TrainSettings:
    out: str
    method: str = "nthr"
    model: str = "tiny"
    task: str = "arithmetic"
    steps: int = 30
    prompts_per_step: int = 4
    group_size: int = 8
    learning_rate: float | None = None         # None: MODEL_DEFAULTS
    temperature: float = 1.0
    max_completion_length: int | None = None   # None: MODEL_DEFAULTS
    seed: int = 0
    eval_every: int = 10                       # greedy held-out accuracy every k steps (0: never)
    eval_questions: int | None = None          # None: the whole eval set
    nthr_beta: float = 1.0
    nthr_eta: str = "paper"
    nthr_vocab: str = "group"
    probe_set_size: int = 16
    probe_every: int = 5
    probe_response_fraction: float = 1.0
    probes: bool = True                        # False: plain TRL GRPOTrainer (for the overhead figure)
    bf16: bool = False
    kl_beta: float = 0.0
    save_steps: int = 0                        # checkpoints for --resume (0: none)
    resume: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)   # any other GRPOConfig field

    def resolved(self) -> "TrainSettings":
        if self.method not in VARIANTS:
            raise ValueError(f"method must be one of {VARIANTS}, got {self.method!r}")
        if self.steps < 1 or self.prompts_per_step < 1 or self.group_size < 2:
            raise ValueError("steps and prompts_per_step must be >= 1 and group_size >= 2")
        defaults = MODEL_DEFAULTS.get(self.model, MODEL_DEFAULTS["smollm2"])
        return replace(self, learning_rate=self.learning_rate or defaults["learning_rate"],
                       max_completion_length=self.max_completion_length or defaults["max_completion_length"])


def reward_function(task):
    """TRL reward function for a task: 1.0 if the completion's answer matches, else 0.0."""
    def correct(completions, answer, **kwargs):
        return [task.reward(c if isinstance(c, str) else c[-1]["content"], a).reward
                for c, a in zip(completions, answer)]
    return correct


def build_dataset(task, tokenizer, count: int, seed: int):
    from datasets import Dataset

    from ...tasks import format_prompt
    questions = task.questions(count, seed=seed)
    return Dataset.from_list([{"prompt": format_prompt(tokenizer, q.prompt), "answer": q.answer,
                               "question_id": q.question_id} for q in questions])


def eval_questions_for(task_name: str, limit: int | None):
    from ...tasks import get_task
    from ...tasks.eval_set import load_eval_set
    if task_name == "arithmetic":
        questions = load_eval_set()
    else:
        questions = get_task(task_name).questions(limit or 32, seed=0, split="eval")
    return questions[:limit] if limit else questions


def per_process_rows(rows_per_step: int) -> int:
    """A step's rows (prompts x G, over all processes) per process of this launch (torchrun / accelerate
    set WORLD_SIZE); groups may straddle processes, the probes handle that."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if rows_per_step % world_size:
        raise ValueError(f"prompts_per_step x group_size = {rows_per_step} rows per step cannot be split evenly "
                         f"over {world_size} processes")
    return rows_per_step // world_size


def make_trainer(settings: TrainSettings, *, model=None, tokenizer=None):
    """(trainer, settings) for a resolved settings object; model/tokenizer default to settings.model."""
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from ...models import load_model
    from ...tasks import get_task
    from .config import LLDConfig
    from .trainer import LLDGRPOTrainer

    settings = settings.resolved()
    torch.manual_seed(settings.seed)
    if model is None:
        model, tokenizer = load_model(settings.model)
    task = get_task(settings.task)
    dataset = build_dataset(task, tokenizer, max(64, settings.steps * settings.prompts_per_step), settings.seed)
    common = dict(
        output_dir=settings.out, max_steps=settings.steps, learning_rate=settings.learning_rate,
        per_device_train_batch_size=per_process_rows(settings.prompts_per_step * settings.group_size),
        gradient_accumulation_steps=1, steps_per_generation=1, num_generations=settings.group_size,
        max_completion_length=settings.max_completion_length, temperature=settings.temperature,
        beta=settings.kl_beta, seed=settings.seed, data_seed=settings.seed, use_cpu=not torch.cuda.is_available(),
        bf16=settings.bf16,
        gradient_checkpointing=False, logging_steps=1, report_to=[], disable_tqdm=not settings.progress,
        save_strategy="steps" if settings.save_steps else "no", save_steps=settings.save_steps or 500,
        save_only_model=False, dataloader_num_workers=0, top_k=0, top_p=1.0)
    common.update(settings.extra)     # the user's GRPOConfig fields win
    reward = reward_function(task)
    if not settings.probes:
        trainer = GRPOTrainer(model=model, args=GRPOConfig(**common), reward_funcs=[reward],
                              train_dataset=dataset, processing_class=tokenizer)
        return trainer, settings
    config = LLDConfig(**common, lld_method=settings.method, nthr_beta=settings.nthr_beta,
                       nthr_eta=settings.nthr_eta, nthr_vocab=settings.nthr_vocab,
                       probe_set_size=settings.probe_set_size, probe_every=settings.probe_every,
                       probe_response_fraction=settings.probe_response_fraction,
                       lld_eval_every=settings.eval_every)
    extra_meta = {"model": settings.model, "task": settings.task, "settings": asdict(settings)}
    trainer = LLDGRPOTrainer(model=model, args=config, reward_funcs=[reward], train_dataset=dataset,
                             processing_class=tokenizer,
                             probe_settings=config.probe_settings(extra_meta=extra_meta,
                                                                  eval_max_new_tokens=settings.max_completion_length),
                             eval_questions=eval_questions_for(settings.task, settings.eval_questions),
                             eval_task=task)
    return trainer, settings


def run_training(settings: TrainSettings, *, model=None, tokenizer=None):
    """Train one run; returns the trainer (its run store is settings.out)."""
    if settings.resume and not any(Path(settings.out).glob("checkpoint-*")):
        raise FileNotFoundError(f"--resume: no checkpoint-* folder in {settings.out} to continue from "
                                f"(checkpoints are written with --save-steps K)")
    trainer, settings = make_trainer(settings, model=model, tokenizer=tokenizer)
    resume = settings.resume
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.train_seconds = time.perf_counter() - start
    return trainer


def run_compare(settings: TrainSettings, methods, seeds, *, out: str):
    """One run per (method, seed) under out/METHOD-seedS; returns the run folders."""
    folders = []
    for seed in seeds:
        for method in methods:
            folder = Path(out) / f"{method}-seed{seed}"
            run_training(replace(settings, method=method, seed=seed, out=str(folder)))
            folders.append(folder)
    return folders
