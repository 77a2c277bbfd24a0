"""The paper's per-question LLD protocol (PAPER Sec. 3 and 5.3).

For each question: sample G responses from the base model, keep mixed groups, and for each method
restore the base parameters exactly, apply ONE update on the group's GRPO loss, and measure on the
same responses the change of log-likelihood (Delta), next to the first-order prediction, NTHR
selection, GWHES, and a fresh-sample pass rate before vs after the update.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from ..core import correct_from_rewards, sequence_logprob
from ..models import load_model, sample_groups
from ..scoring import build_group_batch, score_group
from ..tasks import format_prompt, get_task
from .config import ProtocolConfig
from .precision import ComputeCopy
from .step_context import KeptGroup, step_context_rows
from .question import (apply_update, base_forwards, diagnose, method_row, method_updates, pass_rate, question_seed,
                       response_rows, token_rows)

PROTOCOL_COLUMNS = ["question_id", "method", "group_size", "n_correct", "p", "delta_sum", "delta_mean",
                    "delta_incorrect_sum", "predicted_delta", "predicted_delta_incorrect", "gwhes", "tau",
                    "selected_fraction", "nthr_selected_fraction", "pass_rate_before", "pass_rate_after", "loss",
                    "delta_drift_sum"]


@dataclass
class ProtocolResult:
    protocol: pd.DataFrame        # one row per (question, method)
    responses: pd.DataFrame       # one row per (question, method, response)
    tokens: pd.DataFrame          # one row per response token of each kept group
    questions: pd.DataFrame       # one row per sampled question (kept or dropped)
    config: ProtocolConfig
    step_context: pd.DataFrame | None = None   # with step_groups > 1: one row per (question, method)


class _GroupSampler:
    """The base model's groups, sampled sampling_chunk questions per call, and the fresh-sample pass rates."""

    def __init__(self, copies, tokenizer, task, config):
        self.copies, self.tokenizer, self.task, self.config = copies, tokenizer, task, config
        self._groups = {}

    def _sample(self, prompts, count, seed):
        if count == 0:
            return [[] for _ in prompts]
        return sample_groups(self.copies.compute, self.tokenizer, prompts, group_size=count,
                             temperature=self.config.temperature, max_new_tokens=self.config.max_new_tokens,
                             seed=seed, batch_prompts=len(prompts))

    def group(self, index: int, questions) -> list:
        config = self.config
        if index % config.sampling_chunk == 0:     # the base model samples the groups of the next chunk at once
            chunk = questions[index: index + config.sampling_chunk]
            groups = self._sample([format_prompt(self.tokenizer, q.prompt) for q in chunk], config.group_size,
                                  question_seed(config.seed, chunk[0].question_id, "group"))
            self._groups = {index + offset: g for offset, g in enumerate(groups)}
        return self._groups.pop(index)

    def pass_rate(self, question) -> float:
        """Pass rate of fresh samples; before and after an update they share one seed (common random
        numbers: a paired pass-rate change)."""
        completions = self._sample([format_prompt(self.tokenizer, question.prompt)], self.config.fresh_samples,
                                   question_seed(self.config.seed, question.question_id, "fresh"))[0]
        return pass_rate(self.task, completions, question.answer)


def run_protocol(config: ProtocolConfig, *, model=None, tokenizer=None, progress: bool = True) -> ProtocolResult:
    """Run the protocol on config.device; pass model/tokenizer to reuse a loaded model (moved to
    config.device; its parameters are restored at the end). With config.optimizer_state the steps start from
    that checkpoint's parameters (and, warm, its AdamW moments)."""
    config = config.resolved()
    torch.manual_seed(config.seed)
    if model is None:
        model, tokenizer = load_model(config.model)
    model.to(config.device)
    task = get_task(config.task)
    questions = task.questions(config.questions, seed=config.seed)
    if not questions:
        raise ValueError(f"task {config.task!r} gave no questions")
    warm, original = None, None
    if config.optimizer_state is not None:
        original = {name: value.detach().clone() for name, value in model.state_dict().items()}
        from .warm_state import WarmState
        state = WarmState.load(config.optimizer_state, model)
        state.load_parameters(model)
        warm = state if config.optimizer_moments == "warm" else None
    base_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    copies = ComputeCopy(model, bf16=config.bf16)
    sampler = _GroupSampler(copies, tokenizer, task, config)
    tables = {"protocol": [], "responses": [], "tokens": [], "questions": [], "step_context": []}
    pending, steps_done = [], 0                     # kept groups waiting for their step (step_groups > 1)
    from tqdm.auto import tqdm
    bar = tqdm(questions, desc="protocol", unit="question", disable=not progress)
    for index, question in enumerate(bar):
        if config.mixed is not None and sum(row["mixed"] for row in tables["questions"]) >= config.mixed:
            break
        group = sampler.group(index, questions)
        rewards = [task.reward(c.text, question.answer) for c in group]
        correct = correct_from_rewards(torch.tensor([float(r.reward) for r in rewards]))
        mixed = 0 < int(correct.sum()) < config.group_size
        tables["questions"].append({"question_id": question.question_id, "n_correct": int(correct.sum()),
                                    "group_size": config.group_size, "mixed": mixed})
        if mixed:
            kept = _measure_question(model, tokenizer, copies, base_state, sampler, question, group, rewards,
                                     correct, config, tables, warm)
            if kept is not None:
                pending.append(kept)
            if len(pending) == config.step_groups > 1:
                tables["step_context"] += step_context_rows(model, copies, base_state, pending, steps_done, config,
                                                            warm)
                pending, steps_done = [], steps_done + 1
        if progress:
            bar.set_postfix(mixed=sum(r["mixed"] for r in tables["questions"]), refresh=False)
    model.load_state_dict(original if original is not None else base_state)
    model.zero_grad(set_to_none=True)
    return ProtocolResult(pd.DataFrame(tables["protocol"], columns=PROTOCOL_COLUMNS),
                          pd.DataFrame(tables["responses"]), pd.DataFrame(tables["tokens"]),
                          pd.DataFrame(tables["questions"]), config,
                          pd.DataFrame(tables["step_context"]) if config.step_groups > 1 else None)


def _measure_question(model, tokenizer, copies, base_state, sampler, question, group, rewards, correct, config,
                      tables, warm=None):
    """One mixed group: diagnostics at the base parameters, then per method one update and its Delta. From warm
    moments also the drift: Delta of the correct responses under the step the moments alone make (no gradient).
    Returns the group with its gradients when steps are measured (step_groups > 1)."""
    batch = build_group_batch([c.prompt_ids for c in group], [c.completion_ids for c in group],
                              tokenizer.pad_token_id)
    forwards, old = base_forwards(model, copies, batch, correct, config.temperature)
    base = diagnose(model, old, batch, correct, config)
    pass_before = sampler.pass_rate(question)
    updates = method_updates(model, copies, forwards, base, batch, correct, question.question_id, config)
    del forwards
    drift = math.nan
    if warm is not None:
        apply_update(model, copies, base_state, None, config, warm)
        logp_drift = sequence_logprob(score_group(model, batch, temperature=config.temperature).token_logps.cpu(),
                                      batch.mask)
        drift = float((logp_drift.double() - base.logp_before.double())[correct].mean())
    kept = {}
    for method in config.methods:
        per_token, scaled, loss, gradients, predicted = updates.pop(method)
        apply_update(model, copies, base_state, gradients, config, warm)
        if config.step_groups > 1:
            kept[method] = gradients
        del gradients
        logp_after = sequence_logprob(score_group(model, batch, temperature=config.temperature).token_logps.cpu(),
                                      batch.mask)
        row = method_row(question.question_id, method, base, correct, logp_after, predicted, scaled, loss, batch,
                          config)
        tables["protocol"].append({**row, "pass_rate_before": pass_before,
                                   "pass_rate_after": sampler.pass_rate(question), "delta_drift_sum": drift})
        tables["responses"] += response_rows(question.question_id, method, group, rewards, correct, base,
                                             logp_after, predicted, scaled, batch)
    model.load_state_dict(base_state)
    copies.sync()
    tables["tokens"] += token_rows(question.question_id, tokenizer, correct, base, batch)
    return KeptGroup(question.question_id, batch, correct, base.logp_before, kept) if kept else None


def save_protocol(result: ProtocolResult, out_dir) -> dict:
    """Write protocol.parquet, responses.parquet, tokens.parquet, questions.parquet and meta.json."""
    from pathlib import Path

    from ..store import provenance, write_json, write_parquet
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("protocol", "responses", "tokens", "questions"):
        paths[name] = write_parquet(getattr(result, name), out / f"{name}.parquet")
    if result.step_context is not None:
        paths["step_context"] = write_parquet(result.step_context, out / "step_context.parquet")
    mixed = int(result.questions["mixed"].sum()) if len(result.questions) else 0
    meta = {"kind": "protocol", "settings": asdict(result.config), **provenance(),
            "questions_sampled": len(result.questions), "questions_mixed": mixed,
            "questions_dropped": len(result.questions) - mixed}
    paths["meta"] = write_json(meta, out / "meta.json")
    return paths
