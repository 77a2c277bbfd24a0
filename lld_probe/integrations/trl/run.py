"""Training runs from names: `run_training(TrainSettings(...))` builds the dataset, reward, model and
LLDGRPOTrainer, trains, and leaves a run store in settings.out; `run_compare` does one run per
(method, seed). Used by `lld-probe train` / `lld-probe compare` and by the demo."""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ...core import VARIANTS
from ...store.run_store import RunStoreWriter

# per-model defaults measured on this repository's models (README: training comparisons)
MODEL_DEFAULTS = {
    "tiny": {"learning_rate": 1e-4, "max_completion_length": 24},
    "smollm2": {"learning_rate": 5e-6, "max_completion_length": 48},
    # chain: at temperature 0.7 and a constant lr, 3e-5 lifts GRPO's held-out accuracy 0.79 -> 0.88 in 40 steps,
    # 3e-4 collapses it to 0.20 in 10; its completions are 39-72 tokens
    "chain": {"learning_rate": 3e-5, "max_completion_length": 96},
}


def _setting(default, help: str, flag: str | None = None):
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass
class TrainSettings:
    """A training run from names (what `lld-probe train` builds): which model, task and method, the shape
    of a step, and the probes. make_trainer turns it into an LLDConfig (TRL's config) and a trainer;
    `extra` sets any other GRPOConfig / LLDConfig field."""
    out: str = field(metadata={"help": "run folder (TRL's output_dir; the run store)", "flag": "--out"})
    # > what to train
    method: str = _setting("nthr", "grpo | pos_only | random | nthr", "--method")
    model: str = _setting("tiny", "tiny | smollm2 | a model folder or hub id", "--model")
    task: str = _setting("arithmetic", "arithmetic[2|3] | questions.jsonl", "--task")
    # > a step
    steps: int = _setting(30, "optimizer steps", "--steps")
    prompts_per_step: int = _setting(4, "prompts per step over all processes", "--prompts-per-step")
    group_size: int = _setting(8, "responses per prompt (G)", "--group-size")
    learning_rate: float | None = _setting(None, "None: the model's measured default (MODEL_DEFAULTS)", "--lr")
    temperature: float = _setting(1.0, "sampling temperature", "--temperature")
    max_completion_length: int | None = _setting(None, "None: the model's default (MODEL_DEFAULTS)",
                                                 "--max-completion-length")
    seed: int = _setting(0, "seed of data order, sampling and the random control", "--seed")
    kl_beta: float = _setting(0.0, "TRL's KL coefficient (GRPOConfig.beta)", None)
    bf16: bool = _setting(False, "bf16 autocast (log-likelihoods stay float32)", "--bf16")
    # > the method and the probes
    nthr_beta: float = _setting(1.0, "NTHR threshold factor (-inf: every incorrect token)", "--nthr-beta")
    nthr_eta: str = _setting("paper", "paper | zero | p | 1-p | a number in [0, 1]", "--nthr-eta")
    nthr_vocab: str = _setting("group", "group (V*) | full", "--vocab")
    probe_set_size: int = _setting(16, "probe responses (0: none)", "--probe-set-size")
    probe_every: int = _setting(5, "re-score the probe set every k steps", "--probe-every")
    probe_response_fraction: float = _setting(1.0, "share of responses re-scored after a step", "--probe-fraction")
    probes: bool = _setting(True, "False: plain TRL GRPOTrainer (for the overhead figure)", None)
    correct_reward: str | None = _setting(None, "the reward function whose value says correct (default: the "
                                                "weighted sum of all)", "--correct-reward")
    correct_threshold: float | None = _setting(None, "correct when that reward >= this (None: rewards must be "
                                                     "binary)", "--correct-threshold")
    # > evaluation, checkpoints, output
    eval_every: int = _setting(10, "greedy held-out accuracy every k steps (0: never)", "--eval-every")
    eval_questions: int | None = _setting(None, "first N held-out questions (None: all)", "--eval-questions")
    save_steps: int = _setting(0, "checkpoint every k steps for resume (0: none)", "--save-steps")
    resume: bool = _setting(False, "continue the run in `out` from its last checkpoint", "--resume")
    progress: bool = _setting(True, "TRL's progress bar", None)
    extra: dict = field(default_factory=dict, metadata={"help": "any other GRPOConfig / LLDConfig field",
                                                          "flag": "--trl"})

    def resolved(self) -> "TrainSettings":
        """Defaults filled in (None only: 0 is a value) and every value checked; a ValueError names the
        setting, its command-line flag and the bad value."""
        if self.method not in VARIANTS:
            self._refuse("method", f"must be one of {VARIANTS}")
        for name, low in (("steps", 1), ("prompts_per_step", 1), ("group_size", 2), ("probe_every", 1)):
            if getattr(self, name) < low:
                self._refuse(name, f"must be at least {low}")
        for name in ("eval_every", "save_steps", "probe_set_size"):
            if getattr(self, name) < 0:
                self._refuse(name, "must be 0 (off) or more")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            self._refuse("temperature", "must be a positive number")
        if not 0 < self.probe_response_fraction <= 1:
            self._refuse("probe_response_fraction", "must be in (0, 1]")
        if self.eval_questions is not None and self.eval_questions < 1:
            self._refuse("eval_questions", "must be at least 1 (leave it unset for all)")
        if self.model not in MODEL_DEFAULTS:
            from ...models.loading import check_model_location
            check_model_location(self.model)          # a missing or empty folder, named before anything else
        defaults = MODEL_DEFAULTS.get(self.model)
        values = {}
        for name in ("learning_rate", "max_completion_length"):
            value = getattr(self, name)
            if value is None:
                if defaults is None:
                    self._refuse(name, f"has no default for model {self.model!r} (measured defaults exist for "
                                       f"{sorted(MODEL_DEFAULTS)}): give it (the paper used lr 1e-6, 1,024+ tokens)",
                                 shown=False)
                value = defaults[name]
            values[name] = value
        if not (math.isfinite(values["learning_rate"]) and values["learning_rate"] >= 0):
            self._refuse("learning_rate", "must be a finite number >= 0", values["learning_rate"])
        if values["max_completion_length"] < 1:
            self._refuse("max_completion_length", "must be at least 1", values["max_completion_length"])
        return replace(self, **values)

    def _refuse(self, name: str, rule: str, value=None, *, shown: bool = True):
        flag = {f.name: f.metadata.get("flag") for f in fields(self)}[name]
        value = getattr(self, name) if value is None else value
        raise ValueError(f"{name}{f' ({flag})' if flag else ''} {rule}" + (f", got {value!r}" if shown else ""))


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
    eval_questions = eval_questions_for(settings.task, settings.eval_questions) if settings.eval_every else []
    if settings.eval_every and not eval_questions:
        raise ValueError(f"task {settings.task!r} has no held-out questions for eval_every (--eval-every) "
                         f"{settings.eval_every}: add questions with \"split\": \"eval\", or set it to 0")
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
    lld = dict(lld_method=settings.method, nthr_beta=settings.nthr_beta, nthr_eta=settings.nthr_eta,
               nthr_vocab=settings.nthr_vocab, probe_set_size=settings.probe_set_size,
               probe_every=settings.probe_every, probe_response_fraction=settings.probe_response_fraction,
               lld_eval_every=settings.eval_every, correct_reward=settings.correct_reward,
               correct_threshold=settings.correct_threshold)
    values = {**common, **lld, **settings.extra}          # the user's GRPOConfig / LLDConfig fields win
    with warnings.catch_warnings():   # transformers 5 renames gradient_checkpointing; older versions know only it
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
        if settings.probes:
            config = LLDConfig(**values)
        else:
            config = GRPOConfig(**{k: v for k, v in values.items() if k not in _lld_only_fields()})
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


def _lld_only_fields() -> set:
    from trl import GRPOConfig

    from .config import LLDConfig
    return {f.name for f in fields(LLDConfig)} - {f.name for f in fields(GRPOConfig)}


def run_training(settings: TrainSettings, *, model=None, tokenizer=None):
    """Train one run; returns the trainer (its run store is settings.out)."""
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
            run_training(replace(settings, method=method, seed=seed, out=str(folder)))
            folders.append(folder)
    return folders
