"""What a finished run left behind, read without loading a model: each logged step's responses (in
generation order, with rewards, correctness, advantages, and token ids where they were recorded) and the
checkpoints in HF format, by optimizer step.

Sources (detected from the folder):
- a TRL output_dir: completions/completions_NNNNN.parquet (log_completions=True) or lld_tokens/ (the token
  dump, lld_probe.integrations.trl.token_dump), checkpoint-N/ folders, and the GRPOConfig TRL saves with
  each checkpoint (training_args.bin: group size, temperature, completion length, steps per generation);
- our run store (meta.json + responses/): completion token ids from tokens/, checkpoint-N/ next to it;
- a folder of verl rollout dumps {step}.jsonl, with checkpoint folders given by a pattern with {step}
  (verl: "ckpts/global_step_{step}/actor/huggingface"; OpenRLHF: "ckpt/global_step{step}_hf").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..analysis.read_trl import message_text
from ..core.correctness import BINARY_RULE, configured_rule
from ..store.run_store import is_run_store, read_parquet_files, read_run_store
from ..store.schema import TOKEN_DUMP_DIR, group_id, parse_step_file
from .prompts import TRL_FORM, VERL_FORM, PromptRule

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class LoggedRun:
    kind: str                           # "trl" | "store" | "verl"
    path: Path
    steps: dict                         # logged step -> rows in generation order (see frame_columns)
    checkpoints: dict                   # optimizer step -> HF model folder
    span: int                           # optimizer steps that use one logged generation batch
    group_size: int | None              # None: groups rebuilt from identical prompts (verl)
    temperature: float | None
    max_completion_length: int | None
    mask_truncated: bool = False        # TRL's mask_truncated_completions: cut responses have no measured tokens
    warnings: list = field(default_factory=list)
    prompt_rule: PromptRule = field(default_factory=lambda: PromptRule(TRL_FORM))   # prompts without token ids
    dropped: dict = field(default_factory=dict)    # logged step -> why the reader left it out (a killed run's files)
    correctness_rule: str | None = None            # how `correct` was decided (core.correctness's names)


# every step frame holds: step, group_id, response_index, question_id, prompt (as the trainer tokenised it:
# text or a list of messages), prompt_text, completion, reward, correct, advantage; and, where recorded,
# prompt_ids, completion_ids (the sampled tokens) and truncated


def checkpoints_by_pattern(pattern: str) -> dict:
    """{step: folder} for a pattern with one {step} (e.g. "ckpts/global_step_{step}/actor/huggingface")."""
    if pattern.count("{step}") != 1:
        raise ValueError(f"--checkpoints pattern {pattern!r} must contain {{step}} exactly once")
    import glob
    head, tail = pattern.split("{step}")
    matcher = re.compile(re.escape(head) + r"(\d+)" + re.escape(tail.rstrip("/")) + "$")
    found = {}
    for name in glob.glob(pattern.replace("{step}", "*")):
        match = matcher.match(name.rstrip("/"))
        if match and Path(name).is_dir():
            found[int(match.group(1))] = Path(name)
    return dict(sorted(found.items()))


def trl_checkpoints(path: Path) -> dict:
    found = {int(m.group(1)): f for f in path.iterdir() if f.is_dir() and (m := CHECKPOINT.match(f.name))}
    return dict(sorted(found.items()))


def _training_args(path: Path, checkpoints: dict):
    """The run's GRPOConfig fields (TRL pickles it into every checkpoint), read as inert data (no code from
    the run folder runs); None when no file is there."""
    from types import SimpleNamespace

    from ..analysis.pickled_state import read_pickled_attributes
    files = [path / "training_args.bin"] + [folder / "training_args.bin" for folder in reversed(checkpoints.values())]
    for file in files:
        if file.is_file():
            return SimpleNamespace(**read_pickled_attributes(file))
    return None


def _span(args) -> int:
    """Optimizer steps per generation batch (TRL: steps_per_generation x num_iterations micro-batches)."""
    if args is None:
        return 1
    micro = int(getattr(args, "steps_per_generation", None) or args.gradient_accumulation_steps) * \
        int(getattr(args, "num_iterations", 1))
    return max(1, micro // int(args.gradient_accumulation_steps))


def _consecutive_groups(frame: pd.DataFrame, group_size: int, where) -> pd.DataFrame:
    """TRL's layout: G consecutive rows per prompt. Each block must share one prompt."""
    if len(frame) % group_size:
        raise ValueError(f"{where}: {len(frame)} responses are not whole groups of num_generations={group_size}")
    index = pd.Series(range(len(frame)), index=frame.index)
    frame["group_id"] = [group_id(s, i // group_size) for s, i in zip(frame["step"], index)]
    frame["response_index"] = (index % group_size).to_numpy()
    for gid, rows in frame.groupby("group_id", sort=False):
        if rows["prompt_text"].nunique() != 1:
            raise ValueError(f"{where}: group {gid} holds several prompts: the log is not laid out as consecutive "
                             f"groups of num_generations={group_size}")
    return frame


def _messages(value):
    """A logged conversational prompt (Parquet gives arrays of dicts) -> a list of message dicts."""
    if isinstance(value, str):
        return value
    return [dict(m) for m in value]


def _question_id(prompt_text: str) -> str:
    import hashlib
    return "prompt-" + hashlib.sha256(prompt_text.encode()).hexdigest()[:12]


def _with_correctness(run, correct_reward, correct_threshold):
    """The probes' correctness rule (lld_probe.core.correctness, through load()'s correctness_column) on each
    logged step: reward >= the threshold when one is given, else binary rewards == 1, else a reward above its
    group's mean (the advantage sign). NaN rewards stay NA."""
    from ..analysis.load import correctness_column, deciding_reward
    responses = run.responses
    deciding = deciding_reward(run, correct_reward or run.meta.get("default_correct_reward"))
    responses["correct"] = correctness_column(deciding, correct_threshold, step=responses["step"],
                                              group=responses["group_id"])
    return responses


def read_trl(path: Path, *, correct_reward=None, correct_threshold=None, checkpoints: dict | None = None) -> LoggedRun:
    checkpoints = trl_checkpoints(path) if checkpoints is None else checkpoints
    args = _training_args(path, checkpoints)
    if args is None:
        raise ValueError(f"{path}: no training_args.bin in the output_dir or its checkpoints (TRL writes it with "
                         f"every checkpoint: train with save_steps)")
    group_size = int(args.num_generations)
    dump, dump_warnings = path / TOKEN_DUMP_DIR, []
    dropped, tool_calls = {}, False
    if dump.is_dir() and any(dump.glob("step=*.parquet")):
        frame = read_token_dump(dump, group_size, dump_warnings, dropped)
    else:
        frame, tool_calls = _read_completions(path, correct_reward, correct_threshold)
    from ..analysis.run import Run
    steps = {}
    for step, rows in frame.groupby("step", sort=True):
        rows = _consecutive_groups(rows.reset_index(drop=True), group_size, f"{path} step {step}")
        steps[int(step)] = _with_correctness(Run("trl", path, rows), correct_reward, correct_threshold)
    return LoggedRun("trl", path, steps, checkpoints, _span(args), group_size, float(args.temperature),
                     args.max_completion_length, bool(getattr(args, "mask_truncated_completions", False)),
                     warnings=dump_warnings, prompt_rule=_trl_prompt_rule(args, tool_calls), dropped=dropped)


def _trl_prompt_rule(args, tool_calls: bool) -> PromptRule:
    """How TRL tokenised the logged prompts: the run's chat_template_kwargs (a dict, or JSON text); a run whose
    completions called tools rendered tool schemas into its prompts, which the log does not hold."""
    import json
    kwargs = getattr(args, "chat_template_kwargs", None) or {}
    if isinstance(kwargs, str):
        kwargs = json.loads(kwargs)
    why = ("the run gave the trainer tools, whose schemas the chat template renders into the prompt and the "
           "completions log does not hold (record the token dump)" if tool_calls else None)
    return PromptRule(TRL_FORM, dict(kwargs), why)


def _calls_tools(completion) -> bool:
    """Whether a logged completion (text or messages) holds a tool call or a tool's message."""
    if isinstance(completion, str):
        return False
    try:
        return any(dict(m).get("role") == "tool" or len(dict(m).get("tool_calls") or []) > 0 for m in completion)
    except (TypeError, ValueError):
        return False


def _read_completions(path: Path, correct_reward, correct_threshold) -> tuple[pd.DataFrame, bool]:
    """(TRL's completions log through lld_probe.analysis (rewards, weights, correctness), with the prompts
    as TRL tokenised them (text or messages) read again from the same files; whether a completion called a tool)."""
    from ..analysis.load import load
    files = sorted((path / "completions").glob("completions_*.parquet")) if (path / "completions").is_dir() else []
    if not files:
        raise ValueError(f"{path}: no completions/completions_*.parquet (train with log_completions=True) and no "
                         f"{TOKEN_DUMP_DIR}/ token dump: no responses to re-score")
    run = load(path, correct_reward=correct_reward, correct_threshold=correct_threshold)
    responses = run.responses
    raw = pd.concat([frame[["step", "prompt", "completion"]] for frame in read_parquet_files(files, [])],
                    ignore_index=True)
    tool_calls = any(_calls_tools(c) for c in raw["completion"])
    raw = raw[raw["step"].isin(set(responses["step"]))].reset_index(drop=True)
    if len(raw) != len(responses):
        raise ValueError(f"{path}/completions: {len(raw)} logged rows but the reader kept {len(responses)}")
    responses["prompt_text"] = responses["prompt"]
    responses["prompt"] = [_messages(p) for p in raw["prompt"]]
    responses["question_id"] = [_question_id(p) for p in responses["prompt_text"]]
    return responses, tool_calls


def read_token_dump(folder: Path, group_size: int | None = None, warnings: list | None = None,
                    dropped: dict | None = None) -> pd.DataFrame:
    """The TRL token dump (one file per step, and per process on several: step=NNNNNN.rank=RRRRR) in global row
    order. A step with fewer shards than its processes (a killed run's last step) is skipped with a warning
    (appended to `warnings`); rows written twice (files of two launches with different process counts) are refused."""
    warnings = [] if warnings is None else warnings
    files = {}
    for file in folder.glob("step=*.parquet"):
        parsed = parse_step_file(file.name)
        if parsed:
            files[(parsed[0], -1 if parsed[1] is None else parsed[1])] = file
    frames = read_parquet_files([files[key] for key in sorted(files)], [])
    frame = pd.concat(frames, ignore_index=True).sort_values(["step", "row"], kind="stable").reset_index(drop=True)
    shards = pd.Series([key[0] for key in files]).value_counts()
    for step, rows in frame.groupby("step", sort=True):
        if not rows["row"].is_unique:
            names = sorted(file.name for (at, _), file in files.items() if at == step)
            raise ValueError(f"{folder}: step {step} holds some rows twice ({', '.join(names)}): the dumps of two "
                             f"launches with different process counts; keep one launch's files")
        expected = int(rows["world_size"].iloc[0]) if "world_size" in rows.columns else 1
        if shards[step] < expected:
            why = f"{shards[step]} of {expected} processes' token dump files in {folder.name}/ (a killed run?)"
            warnings.append(f"{folder.name} step {step}: {why}: skipped")
            if dropped is not None:
                dropped[int(step)] = why
            frame = frame[frame["step"] != step]
    frame = frame.reset_index(drop=True)
    frame["prompt_text"] = [message_text(p) for p in frame["prompt"]]
    frame["prompt"] = [_messages(p) for p in frame["prompt"]]
    frame["prompt_ids"] = [list(map(int, ids)) for ids in frame["prompt_ids"]]
    frame["completion_ids"] = [list(map(int, ids)) for ids in frame["completion_ids"]]
    if "question_id" not in frame.columns:
        frame["question_id"] = [_question_id(p) for p in frame["prompt_text"]]
    return frame


def _store_span(path: Path, meta: dict, responses) -> int:
    """Optimizer steps one generation batch of our store spans, as re-scoring needs it: every batch the same
    span w, sampled after a multiple of w steps (the responses' window_steps and steps say; stores without
    window_steps: meta.json's delta_spans_optimizer_steps). Anything else is refused."""
    recorded = responses[responses["window_steps"].notna()] if len(responses) else responses
    if not len(recorded):
        return int(meta.get("delta_spans_optimizer_steps", 1))
    spans = sorted({int(w) for w in recorded["window_steps"]})
    if len(spans) > 1 or any(int(step) % spans[0] for step in recorded["step"].unique()):
        raise ValueError(f"{path}: its generation batches span {spans} optimizer steps (the responses' "
                         f"window_steps), not one span from a multiple of it: re-scoring from checkpoints needs "
                         f"gradient_accumulation_steps to be a multiple or a divisor of steps_per_generation x "
                         f"num_iterations")
    return spans[0]


def read_store(path: Path, *, correct_reward=None, correct_threshold=None, checkpoints: dict | None = None) -> LoggedRun:
    """Our run store: completion ids from its token rows (where a response has all of them), prompts as text."""
    store = read_run_store(path)
    checkpoints = trl_checkpoints(path) if checkpoints is None else checkpoints
    responses = store.responses.copy()
    responses["prompt_text"] = responses["prompt"]
    if correct_reward is not None or correct_threshold is not None:
        from ..analysis.run import Run
        responses["reward"] = responses["reward"].astype(float)
        responses = _with_correctness(Run("store", path, responses, dict(store.meta)), correct_reward,
                                      correct_threshold)
    ids, flags = {}, {}
    if len(store.tokens):
        for key, rows in store.tokens.sort_values("position").groupby(["group_id", "response_index"], sort=False):
            ids[key] = rows["token_id"].astype(int).tolist()
            flags[key] = rows["measured"].astype(bool).tolist()     # n_tokens counts the measured ones
    exact = [(g, int(i)) if (g, int(i)) in ids and sum(flags[(g, int(i))]) == int(n) and not t else None
             for g, i, n, t in zip(responses["group_id"], responses["response_index"], responses["n_tokens"],
                                   responses["truncated"])]
    responses["completion_ids"] = [ids[key] if key else None for key in exact]
    responses["measured"] = [None if not key or all(flags[key]) else flags[key] for key in exact]
    steps = {}
    for step, rows in responses.groupby("step", sort=True):
        rows = rows.assign(_g=[int(g.split(":")[1]) for g in rows["group_id"]])
        steps[int(step)] = rows.sort_values(["_g", "response_index"], kind="stable").drop(columns="_g") \
            .reset_index(drop=True)
    meta = store.meta
    # the store's own correctness unless told otherwise (stores that record no rule took the binary one)
    told = correct_reward is not None or correct_threshold is not None
    rule = configured_rule(correct_threshold) if told else meta.get("correctness_rule", BINARY_RULE)
    return LoggedRun("store", path, steps, checkpoints, _store_span(path, meta, store.responses),
                     meta.get("group_size"), meta.get("temperature"), meta.get("max_completion_length"),
                     warnings=list(store.warnings), prompt_rule=PromptRule(TRL_FORM, printed_conversations=True),
                     correctness_rule=rule)


def read_verl(path: Path, *, correct_reward=None, correct_threshold=None, checkpoints: dict | None = None) -> LoggedRun:
    """verl rollout dumps (lld_probe.analysis.read_verl: input, output, score per line); groups rebuilt from
    identical prompts within a step, put in consecutive rows."""
    from ..analysis.load import load
    run = load(path, correct_reward=correct_reward, correct_threshold=correct_threshold)
    responses = _with_correctness(run, correct_reward, correct_threshold)
    responses["prompt_text"] = responses["prompt"]
    if "question_id" not in responses.columns:
        responses["question_id"] = [_question_id(p) for p in responses["prompt_text"]]
    steps = {}
    for step, rows in responses.groupby("step", sort=True):
        rows = rows.assign(_g=[int(g.split(":")[1]) for g in rows["group_id"]])
        steps[int(step)] = rows.sort_values(["_g", "response_index"], kind="stable").drop(columns="_g") \
            .reset_index(drop=True)
    return LoggedRun("verl", path, steps, checkpoints or {}, 1, None, None, None, warnings=list(run.warnings),
                     prompt_rule=PromptRule(VERL_FORM), dropped=dict(run.skipped_steps))


def read_source(path, *, checkpoints: str | None = None, correct_reward=None, correct_threshold=None) -> LoggedRun:
    """The run in `path` (see the module doc); `checkpoints`: a pattern with {step} for the checkpoint
    folders (required for verl / OpenRLHF; TRL and our store default to checkpoint-N/ in the run folder)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run folder")
    found = checkpoints_by_pattern(checkpoints) if checkpoints else None
    options = dict(correct_reward=correct_reward, correct_threshold=correct_threshold, checkpoints=found)
    if is_run_store(path):
        logged = read_store(path, **options)
    elif (path / "completions").is_dir() or (path / TOKEN_DUMP_DIR).is_dir() or any(path.glob("checkpoint-*")):
        logged = read_trl(path, **options)
    elif any(path.glob("*.jsonl")):
        if not checkpoints:
            raise ValueError(f"{path}: a verl dump folder needs --checkpoints PATTERN (the HF checkpoint folders, "
                             f"e.g. 'ckpts/global_step_{{step}}/actor/huggingface')")
        logged = read_verl(path, **options)
    else:
        raise ValueError(f"{path}: not a TRL output_dir (completions/, checkpoint-N/), run store or verl dump folder")
    if not logged.checkpoints:
        where = f"matching {checkpoints!r}" if checkpoints else f"checkpoint-N/ in {path}"
        raise ValueError(f"{path}: no checkpoints ({where}): train with save_steps (TRL) or give --checkpoints")
    if not logged.steps:
        raise ValueError(f"{path}: no logged responses to re-score")
    if logged.correctness_rule is None:          # decided here by core.correctness's rule
        logged.correctness_rule = configured_rule(correct_threshold)
    return logged
