"""Training runs from names: `run_training(TrainSettings(...))` builds the dataset, reward, model and
LLDGRPOTrainer, trains, and leaves a run store in settings.out; `run_compare` does one run per
(method, seed). Used by `lld-probe train` / `lld-probe compare` and by the demo."""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ...core import setting
from ...models.defaults import MODEL_DEFAULTS, completion_length_for, learning_rate_for
from ...probes import ProbeSettings
from ...probes.settings import user_fields
from ...store.run_store import RunStoreWriter

@dataclass
class TrainSettings:
    """A training run from names (what `lld-probe train` builds): which model, task and method, the shape of a
    step, and the probes (`probe`, a ProbeSettings: method, NTHR and probe settings). make_trainer turns it
    into an LLDConfig (TRL's config) and a trainer; `extra` sets any other GRPOConfig / LLDConfig field. The
    command line is generated from these fields (lld_probe.options)."""
    out: str | None = setting(None, "run folder (TRL's output_dir; the run store); default runs/train-<time>")
    # > what to train
    model: str = setting("tiny", "tiny | chain | smollm2 | a model folder or hub id")
    task: str = setting("arithmetic", "arithmetic[2|3] | chain | questions.jsonl")
    probe: ProbeSettings = field(default_factory=ProbeSettings, metadata={"help": "method, NTHR and probes"})
    # > a step
    steps: int = setting(30, "optimizer steps")
    prompts_per_step: int = setting(4, "prompts per step over all processes")
    group_size: int = setting(8, "responses per prompt (G)")
    learning_rate: float | None = setting(None, "None: the model's measured default (lld_probe.models.defaults)",
                                          aliases=("--lr",))
    temperature: float = setting(1.0, "sampling temperature")
    max_completion_length: int | None = setting(None, "None: the model's default (lld_probe.models.defaults)")
    seed: int = setting(0, "seed of data order, sampling and the random control")
    kl_beta: float = setting(0.0, "TRL's KL coefficient (GRPOConfig.beta)")
    bf16: bool = setting(False, "bf16 autocast for training (the probes' log-likelihoods stay float32)")
    # > evaluation, checkpoints, output
    eval_questions: int | None = setting(None, "first N held-out questions for eval_every (None: all)")
    save_steps: int = setting(0, "checkpoint every k steps, for resume (0: none)")
    resume: bool = setting(False, "continue the run in `out` from its last checkpoint")
    progress: bool = setting(True, "TRL's progress bar", internal=True)
    probes: bool = setting(True, "False: plain TRL GRPOTrainer (for the overhead benchmark)", internal=True)
    extra: dict = setting({}, "any other GRPOConfig / LLDConfig field (command line: --trl KEY=VALUE)",
                          internal=True)

    def with_method(self, method: str, seed: int, out: str) -> "TrainSettings":
        """The same run with another method and seed into another folder (run_compare)."""
        return replace(self, probe=replace(self.probe, method=method), seed=seed, out=out)

    def resolved(self) -> "TrainSettings":
        """Defaults filled in (None only: 0 is a value) and every value checked; a ValueError names the
        setting, its command-line flag and the bad value."""
        if not self.out:
            self._refuse("out", "must name the run folder", shown=False)
        for name, low in (("steps", 1), ("prompts_per_step", 1), ("group_size", 2)):
            if getattr(self, name) < low:
                self._refuse(name, f"must be at least {low}")
        if self.save_steps < 0:
            self._refuse("save_steps", "must be 0 (off) or more")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            self._refuse("temperature", "must be a positive number")
        if self.eval_questions is not None and self.eval_questions < 1:
            self._refuse("eval_questions", "must be at least 1 (leave it unset for all)")
        if self.model not in MODEL_DEFAULTS:
            from ...models.loading import check_model_location
            check_model_location(self.model)          # a missing or empty folder, named before anything else
        learning_rate = self.learning_rate if self.learning_rate is not None else learning_rate_for(self.model)
        if learning_rate is None:
            self._refuse("learning_rate", f"has no measured default for model {self.model!r} (measured for "
                                          f"{sorted(m for m in MODEL_DEFAULTS if learning_rate_for(m))}): give it "
                                          f"(the paper used lr 1e-6)", shown=False)
        if not (math.isfinite(learning_rate) and learning_rate >= 0):
            self._refuse("learning_rate", "must be a finite number >= 0", learning_rate)
        length = completion_length_for(self.model, self.max_completion_length)
        if length < 1:
            self._refuse("max_completion_length", "must be at least 1", length)
        return replace(self, learning_rate=learning_rate, max_completion_length=length)

    def _refuse(self, name: str, rule: str, value=None, *, shown: bool = True):
        value = getattr(self, name) if value is None else value
        flag = "--" + name.replace("_", "-")
        raise ValueError(f"{name} ({flag}) {rule}" + (f", got {value!r}" if shown else ""))


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
    """(trainer, settings) for a settings object; model/tokenizer default to settings.model. Every setting
    is checked, and the TRL config built, before a model loads."""
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from ...models import load_model
    from ...tasks import get_task
    from .config import LLDConfig
    from .trainer import LLDGRPOTrainer

    settings = settings.resolved()
    task = get_task(settings.task)
    eval_every = settings.probe.eval_every
    eval_questions = eval_questions_for(settings.task, settings.eval_questions) if eval_every else []
    if eval_every and not eval_questions:
        raise ValueError(f"task {settings.task!r} has no held-out questions for eval_every (--eval-every) "
                         f"{eval_every}: add questions with \"split\": \"eval\", or set it to 0")
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
    probe = {f.name: getattr(settings.probe, f.name) for f in user_fields()} if settings.probes else {}
    values = {**common, **probe, **settings.extra}          # the user's GRPOConfig / LLDConfig fields win
    with warnings.catch_warnings():   # transformers 5 renames gradient_checkpointing; older versions know only it
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
        config = (LLDConfig if settings.probes else GRPOConfig)(**values)
    torch.manual_seed(settings.seed)
    if model is None:
        model, tokenizer = load_model(settings.model)
    dataset = build_dataset(task, tokenizer, max(64, settings.steps * settings.prompts_per_step), settings.seed)
    reward = reward_function(task)
    if not settings.probes:
        return GRPOTrainer(model=model, args=config, reward_funcs=[reward], train_dataset=dataset,
                           processing_class=tokenizer), settings
    extra_meta = {"model": settings.model, "task": settings.task, "settings": asdict(settings),
                  "eval_split": getattr(task, "split_source", "the task's held-out split")}
    trainer = LLDGRPOTrainer(model=model, args=config, reward_funcs=[reward], train_dataset=dataset,
                             processing_class=tokenizer,
                             probe_settings=config.probe_settings(extra_meta=extra_meta,
                                                                  eval_max_new_tokens=config.max_completion_length),
                             eval_questions=eval_questions, eval_task=task)
    return trainer, settings


def run_training(settings: TrainSettings, *, model=None, tokenizer=None):
    """Train one run; returns the trainer (its run store is settings.out)."""
    settings = settings.resolved()
    if settings.resume and not any(Path(settings.out).glob("checkpoint-*")):
        raise FileNotFoundError(f"--resume: no checkpoint-* folder in {settings.out} to continue from "
                                f"(checkpoints are written with --save-steps K)")
    if not settings.resume and settings.probes and RunStoreWriter(settings.out).has_steps():   # before a model loads
        raise FileExistsError(f"{settings.out} already holds a run store: write to another folder (out), or "
                              f"resume it (resume=True, with checkpoints from save_steps)")
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
            run_training(settings.with_method(method, seed, str(folder)))
            folders.append(folder)
    return folders
