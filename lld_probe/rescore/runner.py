"""`rescore(run, out)`: the likelihood dynamics of a run trained without the probes, from its logged
responses and its checkpoints (docs/rescore.md).

The work is one unit per checkpoint: load it once, score the "before" half of every step it precedes
(with NTHR), the "after" half of every step it follows, and the probe set. Units are shared out over N
processes (torchrun; unit i goes to process i mod N), every half is written as soon as it is computed, and
a unit whose halves all exist is skipped: a killed re-scoring continues where it stopped. A step whose two
halves exist becomes an ordinary run-store step, which load(), `lld-probe report` and `figures` read.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch

from ..core.nthr_settings import NTHRSettings, setting
from ..probes import ProbeSettings
from ..probes.probe_set import draw_probe_set, probe_set_rows, score_probe_set
from ..scoring.packing import DEFAULT_MAX_TOKENS
from ..store.atomic import write_json, write_parquet
from ..store.provenance import provenance
from ..store.run_store import RunStoreWriter, read_run_store
from ..store.schema import step_path
from .checkpoints import load_checkpoint, load_tokenizer, model_location, vocabulary_size
from .prompts import PromptBuilder
from .sources import LoggedRun, read_source
from .tokens import StepTokens, check_tokenizer, step_tokens
from .windows import Window, plan_windows
from .work import (WORK_DIR, assemble_step, generation_batch, partial_path, score_after,
                   score_before)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class RescoreSettings(NTHRSettings):
    """What `rescore` needs besides the run (NTHR's settings as the probes'; nthr_eta is not used: nothing is
    trained). The command line is generated from these fields."""
    initial_model: str | None = setting(None, "the model before step 1 (checkpoint 0; a folder or name); None: "
                                              "step 1 is skipped")
    tokenizer: str | None = setting(None, "tokenizer of the logged text (default: the initial model's, else the "
                                          "first checkpoint's)")
    checkpoints: str | None = setting(None, "checkpoint folders as a pattern with {step}, e.g. "
                                            "'ckpts/global_step_{step}/actor/huggingface' (verl) or "
                                            "'ckpt/global_step{step}_hf' (OpenRLHF); default: RUN/checkpoint-{step}")
    probe_set_size: int = setting(0, "N fixed responses (half correct, half near misses) scored at every "
                                     "checkpoint; 0: none", aliases=("--probe-set",))
    temperature: float | None = setting(None, "sampling temperature (default: the run's; 1.0 for verl)")
    correct_reward: str | None = setting(None, "the reward function (column) that decides correctness (default: "
                                               "the weighted reward)")
    correct_threshold: float | None = setting(None, "correct when the deciding reward >= this (default: the "
                                                    "probes' rule: binary rewards == 1, else above the group's mean)")
    max_tokens: int = setting(DEFAULT_MAX_TOKENS, "packed tokens per scoring forward (raise it on a GPU)")
    dtype: str = setting("float32", "weights' dtype: float32 | bfloat16 (log-likelihoods are float32 either way)")
    device: str | None = setting(None, "default: this process's GPU (LOCAL_RANK) if there is one, else cpu")
    progress: bool = setting(True, "progress bar")

    def __post_init__(self):
        super().__post_init__()
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype (--dtype) must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.probe_set_size < 0:
            raise ValueError(f"probe_set_size (--probe-set) must be 0 or more, got {self.probe_set_size}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens (--max-tokens) must be at least 1, got {self.max_tokens}")
        if self.temperature is not None and not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature (--temperature) must be a positive number, got {self.temperature}")


@dataclass
class RescoreSummary:
    out: Path
    steps: list                     # steps in the store
    skipped: dict                   # logged step -> why it has no Delta
    responses: int                  # responses in the store
    text_responses: int             # re-tokenised from text
    not_roundtrip: int              # of those, not decoding back to the logged text (left unmeasured)
    checkpoints_loaded: int         # by all processes, in this call
    responses_scored: int           # response scorings (before and after, and probe-set rows), in this call
    scoring_seconds: float          # time in loading and scoring, summed over processes
    wall_seconds: float
    world_size: int = 1
    warnings: list = field(default_factory=list)
    prompt_not_verified: int = 0    # prompts rebuilt from text that could not be verified (left unmeasured)

    def line(self) -> str:
        rate = self.responses_scored / self.scoring_seconds if self.scoring_seconds else float("nan")
        skipped = f", {len(self.skipped)} logged step(s) skipped" if self.skipped else ""
        inexact = (f"; {self.not_roundtrip} of {self.text_responses} re-tokenised responses do not round-trip "
                   f"(left unmeasured)" if self.text_responses else "; token ids from the log")
        if self.prompt_not_verified:
            inexact += (f"; {self.prompt_not_verified} of {self.responses} prompts not verified against the log "
                        f"(left unmeasured)")
        return (f"rescore: {len(self.steps)} steps, {self.responses} responses in {self.out}{skipped}{inexact}; "
                f"{self.responses_scored} scorings at {self.checkpoints_loaded} checkpoint loads in "
                f"{self.wall_seconds:.1f} s on {self.world_size} process(es) ({rate:.1f} responses/s per process)")


def _processes():
    """(rank, world size, torch.distributed or None, whether this call initialised it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, None, False
    import torch.distributed as dist
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), dist, created


def _device(setting: str | None) -> str:
    if setting:
        return setting
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def _group_size(logged: LoggedRun, rows: pd.DataFrame, step: int) -> int:
    if logged.group_size:
        return int(logged.group_size)
    sizes = rows.groupby("group_id", sort=False).size().unique()
    if len(sizes) != 1:
        raise ValueError(f"{logged.path} step {step}: groups of different sizes {sorted(sizes)}: the probes need "
                         f"equal groups")
    return int(sizes[0])


# settings a resumed re-scoring must share with the first call (the halves already written depend on them)
RESUME_SETTINGS = ("initial_model", "tokenizer", "checkpoints", "probe_set_size", "nthr_beta", "nthr_vocab",
                   "nthr_anchor_self", "temperature", "correct_reward", "correct_threshold", "dtype")


def _check_store(out: Path, source: Path, settings: RescoreSettings) -> None:
    """An output folder that holds another run's store is refused; the same re-scoring (same run, same
    settings that the written halves depend on) is resumed."""
    meta_file = out / "meta.json"
    if not meta_file.is_file():
        if out.is_dir() and (out / "responses").is_dir() and any((out / "responses").iterdir()):
            raise FileExistsError(f"{out} holds responses but no meta.json: give another --out")
        return
    import json
    meta = json.loads(meta_file.read_text())
    previous = meta.get("rescored_from")
    if previous != str(source.resolve()):
        raise FileExistsError(f"{out} already holds a run store ({'re-scored from ' + previous if previous else 'not a re-scoring'}): "
                              f"give another --out (the same run and --out resume a re-scoring)")
    before = meta.get("rescore", {})
    changed = [f"{name} {before.get(name)!r} -> {getattr(settings, name)!r}" for name in RESUME_SETTINGS
               if before.get(name) != getattr(settings, name)]
    if changed:
        raise FileExistsError(f"{out} is a re-scoring of this run with other settings ({'; '.join(changed)}): "
                              f"resume it with the same settings, or give another --out")


class _Plan:
    """Everything decided before a model loads: windows, tokens, checkpoints, probe items."""

    def __init__(self, logged: LoggedRun, settings: RescoreSettings):
        self.logged = logged
        self.settings = settings
        folders = {int(step): folder for step, folder in logged.checkpoints.items()}
        if settings.initial_model is not None:
            folders[0] = settings.initial_model
        self.windows, skipped = plan_windows(logged.steps, folders, logged.span)
        self.skipped = dict(sorted({**logged.dropped, **skipped}.items()))       # every logged step left out
        if not self.windows:
            reasons = "; ".join(f"step {s}: {why}" for s, why in list(self.skipped.items())[:3])
            raise ValueError(f"{logged.path}: no logged step has checkpoints on both sides ({reasons})")
        used = {w.before for w in self.windows} | {w.after for w in self.windows}
        if settings.probe_set_size:
            used |= set(folders)
        self.folders = {step: model_location(folders[step]) for step in sorted(used)}     # each checked now
        tokenizer_source = settings.tokenizer or settings.initial_model or self.folders[min(s for s in self.folders if s)]
        self.tokenizer_source = str(tokenizer_source)
        self.tokenizer = load_tokenizer(tokenizer_source)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.prompts = PromptBuilder(self.tokenizer, logged.prompt_rule)
        self.temperature = settings.temperature or logged.temperature or 1.0
        self.vocab = vocabulary_size(next(iter(self.folders.values())))
        self.group_sizes = {w.step: _group_size(logged, self.rows(w), w.logged_step) for w in self.windows}
        self._cache: dict[int, StepTokens] = {}       # a few steps' tokens (built again when needed: memory stays flat)
        first = self.windows[0]
        check_tokenizer(self.tokens(first), self.tokenizer_source, first.logged_step)
        self.probe_settings = ProbeSettings(method="grpo", nthr_beta=settings.nthr_beta, nthr_vocab=settings.nthr_vocab,
                                            nthr_anchor_self=settings.nthr_anchor_self, probe_set_size=0,
                                            probe_score_max_tokens=settings.max_tokens)
        self.probe_items = self._draw_probe_set() if settings.probe_set_size else []

    def rows(self, window: Window) -> pd.DataFrame:
        return self.logged.steps[window.logged_step]

    def tokens(self, window: Window) -> StepTokens:
        if window.step not in self._cache:
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            logged = self.logged
            self._cache[window.step] = step_tokens(
                self.rows(window), self.tokenizer, self.prompts, max_completion_length=logged.max_completion_length,
                mask_truncated=logged.mask_truncated, vocab_size=self.vocab,
                where=f"{logged.path} step {window.logged_step}")
        return self._cache[window.step]

    def generation(self, window: Window):
        return generation_batch(window.step, self.rows(window), self.tokens(window),
                                group_size=self.group_sizes[window.step], pad_id=self.pad_id)

    def _draw_probe_set(self) -> list[dict]:
        """The probes' draw (half correct, half near misses of mixed groups) from the first step with a mixed group."""
        for window in self.windows:
            rows, size = self.rows(window), self.group_sizes[window.step]
            correct = rows["correct"].astype(bool).to_numpy()
            if not any(0 < correct[g: g + size].sum() < size for g in range(0, len(rows), size)):
                continue
            tokens = self.tokens(window)
            candidates = [{"row": i, "group": i // size, "correct": bool(correct[i]),
                           "question_id": str(rows["question_id"].iloc[i]), "prompt_ids": tokens.prompt_ids[i],
                           "completion_ids": tokens.completion_ids[i],
                           "measured": tokens.measured[i] if tokens.measured else None, "logp_before": math.nan}
                          for i in range(len(rows))
                          if tokens.completion_ids[i] and (not tokens.measured or tokens.measured[i] is None
                                                           or any(tokens.measured[i]))]
            items = draw_probe_set(candidates, self.settings.probe_set_size, size)
            if items:
                return items
        return []

    def units(self) -> list[int]:
        return sorted(self.folders)


def rescore(run, out, settings: RescoreSettings | None = None, **changes) -> RescoreSummary:
    """Re-score a run's logged responses at its checkpoints into a run store at `out` (see the module doc).
    `run`: a TRL output_dir, our run store, or a verl dump folder (with settings.checkpoints); keyword
    arguments override fields of settings."""
    from dataclasses import replace
    settings = replace(settings or RescoreSettings(), **changes)
    started = time.perf_counter()
    source, out = Path(run), Path(out)
    rank, world, dist, created = _processes()
    try:
        _check_store(out, source, settings)
        logged = read_source(source, checkpoints=settings.checkpoints, correct_reward=settings.correct_reward,
                             correct_threshold=settings.correct_threshold)
        plan = _Plan(logged, settings)
        writer = RunStoreWriter(out, rank=None, is_main=rank == 0)
        if rank == 0:
            writer.write_meta(_meta(plan, source, world))
            if settings.probe_set_size and plan.probe_items:
                write_json(plan.probe_items, out / WORK_DIR / "probe_items.json")
        counts = _run_units(plan, out, rank, world, settings)
        if dist is not None:
            gathered = [None] * world
            dist.all_gather_object(gathered, counts)
            dist.barrier()
        else:
            gathered = [counts]
        if rank == 0:
            _assemble(plan, out, writer)
            _copy_scalars(logged, writer)
        warnings = list(logged.warnings) + [f"prompts not verified against the log (left unmeasured): {why}"
                                            for why in plan.prompts.problems]
        if dist is not None:
            dist.barrier()
        summary = _summary(plan, out, gathered, time.perf_counter() - started, world, warnings)
        if rank == 0:       # the summary joins meta.json (not a restart)
            import json
            meta = json.loads((out / "meta.json").read_text())
            write_json({**meta, "rescore_summary": summary.line(), "rescore_warnings": summary.warnings,
                        "left_unmeasured": {"completion_not_roundtrip": summary.not_roundtrip,
                                            "prompt_not_verified": summary.prompt_not_verified}}, out / "meta.json")
        return summary
    finally:
        if created:
            dist.destroy_process_group()


def _meta(plan: _Plan, source: Path, world: int) -> dict:
    logged, settings = plan.logged, plan.settings
    return {**provenance(), "method": "grpo", "source": logged.kind, "rescored_from": str(source.resolve()),
            "model": plan.folders.get(0) or next(iter(plan.folders.values())),
            "checkpoints": {str(step): str(folder) for step, folder in plan.folders.items()},
            "tokenizer": plan.tokenizer_source, "temperature": plan.temperature,
            "group_size": logged.group_size, "delta_spans_optimizer_steps": logged.span,
            "window_steps": sorted({w.window_steps for w in plan.windows}),
            "skipped_steps": {str(s): why for s, why in plan.skipped.items()},
            "correctness_rule": logged.correctness_rule,
            "nthr_beta": settings.nthr_beta, "nthr_vocab": settings.nthr_vocab,
            "nthr_anchor_self": settings.nthr_anchor_self, "rescore": asdict(settings), "world_size": 1,
            "rescore_processes": world, "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _run_units(plan: _Plan, out: Path, rank: int, world: int, settings: RescoreSettings) -> dict:
    """This process's checkpoints: every missing half and probe-set score at each, one model load each."""
    from tqdm.auto import tqdm
    units = plan.units()[rank::world]
    counts = {"loaded": 0, "scored": 0, "seconds": 0.0}
    device = _device(settings.device)
    label = "rescore" + (f" [{rank}/{world}]" if world > 1 else "")
    for checkpoint in tqdm(units, desc=label, unit="checkpoint", disable=not settings.progress, position=rank):
        before = [w for w in plan.windows if w.before == checkpoint
                  and not partial_path(out, "before", w.step, checkpoint).is_file()]
        after = [w for w in plan.windows if w.after == checkpoint
                 and not partial_path(out, "after", w.step, checkpoint).is_file()]
        probe = bool(plan.probe_items) and not step_path(out / "probe_set", checkpoint).is_file()
        if not (before or after or probe):
            continue
        start = time.perf_counter()
        model = load_checkpoint(plan.folders[checkpoint], dtype=DTYPES[settings.dtype], device=device)
        counts["loaded"] += 1
        for window in before:
            generation = plan.generation(window)
            frame = score_before(model, generation, plan.probe_settings, temperature=plan.temperature,
                                 max_tokens=settings.max_tokens)
            write_parquet(frame, partial_path(out, "before", window.step, checkpoint))
            counts["scored"] += generation.size
        for window in after:
            generation = plan.generation(window)
            frame = score_after(model, generation, temperature=plan.temperature, max_tokens=settings.max_tokens)
            write_parquet(frame, partial_path(out, "after", window.step, checkpoint))
            counts["scored"] += generation.size
        if probe:
            logps = score_probe_set(model, plan.probe_items, pad_id=plan.pad_id, temperature=plan.temperature,
                                    max_tokens=settings.max_tokens)
            # the store's own probe-set file of this step (each checkpoint's written by one process)
            write_parquet(probe_set_rows(plan.probe_items, checkpoint, logps), step_path(out / "probe_set", checkpoint))
            counts["scored"] += len(plan.probe_items)
        del model
        counts["seconds"] += time.perf_counter() - start
        if world == 1:     # one process: each finished step lands in the store at once
            _assemble(plan, out, RunStoreWriter(out))
    return counts


def _assemble(plan: _Plan, out: Path, writer: RunStoreWriter) -> None:
    """Every step whose two halves exist and that the store lacks -> responses/ and tokens/."""
    for window in plan.windows:
        if step_path(out / "responses", window.step).is_file():
            continue
        before_file = partial_path(out, "before", window.step, window.before)
        after_file = partial_path(out, "after", window.step, window.after)
        if not (before_file.is_file() and after_file.is_file()):
            continue
        responses, tokens = assemble_step(plan.generation(window), plan.tokens(window),
                                          pd.read_parquet(before_file), pd.read_parquet(after_file), window,
                                          plan.tokenizer, plan.probe_settings)
        writer.write_step(window.step, responses, tokens)


def _copy_scalars(logged: LoggedRun, writer: RunStoreWriter) -> None:
    """The run's own logged metrics (TRL's trainer_state.json, our store's scalars) into the new store."""
    if logged.kind == "trl":
        from ..analysis.read_trl import _trainer_state, read_scalars
        state = _trainer_state(logged.path)
        scalars = read_scalars(state) if state else None
    elif logged.kind == "store":     # the store's own reader: per-step files, or one file in older stores
        scalars = read_run_store(logged.path).scalars
    else:
        scalars = None
    if scalars is not None and len(scalars):
        for step, rows in scalars.groupby("step"):
            writer.append_scalars(int(step), dict(zip(rows["name"], rows["value"])))


def _summary(plan: _Plan, out: Path, gathered: list, wall: float, world: int, warnings: list) -> RescoreSummary:
    files = [step_path(out / "responses", w.step) for w in plan.windows]
    written = [file for file in files if file.is_file()]
    columns = ["step", "tokenization", "roundtrip_ok", "prompt_ok"]
    # steps written before prompt_ok was a column had every prompt's ids or did not check them: True
    marks = pd.concat([pd.read_parquet(f).reindex(columns=columns, fill_value=True) for f in written],
                      ignore_index=True) if written else pd.DataFrame(columns=columns)
    text = marks[marks["tokenization"] == "text"]
    return RescoreSummary(out=out, steps=sorted(int(s) for s in marks["step"].unique()), skipped=dict(plan.skipped),
                          responses=len(marks), text_responses=len(text),
                          not_roundtrip=int((~text["roundtrip_ok"].astype(bool)).sum()),
                          checkpoints_loaded=sum(c["loaded"] for c in gathered),
                          responses_scored=sum(c["scored"] for c in gathered),
                          scoring_seconds=sum(c["seconds"] for c in gathered), wall_seconds=wall, world_size=world,
                          warnings=list(warnings), prompt_not_verified=int((~marks["prompt_ok"].astype(bool)).sum()))
