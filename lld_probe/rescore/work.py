"""One logged step through the probes' own machinery, with checkpoints in place of the live model.

At the checkpoint before the step: the packed scoring of the whole generation batch (log-probs, entropy,
final hidden states) and the NTHR scores and selection of each group (lld_probe.probes.old_policy, as the
recorder does before an update). At the checkpoint after it: the packed scoring of the responses with
measured tokens (as the recorder's finish_step). Each half is written as a partial file as soon as it is
computed (atomic; a killed re-scoring keeps it), and a step whose two halves exist becomes an ordinary run
store step (lld_probe.probes.rows): responses/ and tokens/.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core import sequence_logprob
from ..probes import GenerationBatch, OldPolicyScores, ProbedBatch, ProbeSettings, RowLayout, SingleProcess
from ..probes.old_policy import score_old_policy
from ..probes.rows import response_rows, token_rows
from ..probes.weighting import method_weighting
from ..scoring import build_group_batch, logit_transform_of, output_embedding_weight, score_group
from ..store.schema import TOKEN_TEXT_COLUMN
from .tokens import StepTokens

WORK_DIR = ".rescore"          # partial results inside the output store


def partial_path(out, half: str, step: int, checkpoint: int) -> Path:
    """The partial file of one half ("before" | "after") of a step, measured at one checkpoint."""
    return Path(out) / WORK_DIR / half / f"step={step:06d}.checkpoint={checkpoint:06d}.parquet"


def generation_batch(step: int, rows: pd.DataFrame, tokens: StepTokens, *, group_size: int, pad_id: int) -> GenerationBatch:
    """A logged step as the recorder's GenerationBatch (one process holding the whole batch)."""
    count = len(rows)
    if count % group_size:
        raise ValueError(f"step {step}: {count} responses are not whole groups of {group_size}")
    correct = rows["correct"]
    if correct.isna().any():
        raise ValueError(f"step {step}: a deciding reward is NaN (no reward function scored the response), so its "
                         f"correctness is unknown: name another with --correct-reward")
    correct = torch.tensor(correct.astype(bool).to_numpy())
    return GenerationBatch(
        step=step, batch=build_group_batch(tokens.prompt_ids, tokens.completion_ids, pad_id, tokens.measured),
        layout=RowLayout(0, 1, count, group_size), rewards=torch.tensor(rows["reward"].to_numpy(dtype=float)).float(),
        correct=correct, group_correct={g: correct[g * group_size: (g + 1) * group_size]
                                        for g in range(count // group_size)},
        advantages=torch.tensor(rows["advantage"].to_numpy(dtype=float)).float(),
        prompts=tuple(str(p) for p in rows["prompt_text"]), completions=tuple(str(c) for c in rows["completion"]),
        question_ids=tuple(str(q) for q in rows["question_id"]), rescored=torch.ones(count, dtype=torch.bool),
        truncated=torch.tensor(tokens.truncated, dtype=torch.bool))


def _rows_of(values: torch.Tensor, mask: torch.Tensor) -> list:
    """[B, T] -> one list per row of its measured positions."""
    return [values[row][mask[row]].tolist() for row in range(values.shape[0])]


def _padded(lists, mask: torch.Tensor, dtype) -> torch.Tensor:
    out = torch.zeros(mask.shape, dtype=dtype)
    for row, values in enumerate(lists):
        out[row, : len(values)] = torch.tensor(list(values), dtype=dtype)
    return out


def score_before(model, generation: GenerationBatch, settings: ProbeSettings, *, temperature: float,
                 max_tokens: int) -> pd.DataFrame:
    """The old policy (the checkpoint before the step): log-probs, entropy, NTHR scores and selection."""
    scored = score_group(model, generation.batch, temperature=temperature, with_hidden=True, with_entropy=True,
                         max_tokens=max_tokens)
    old = score_old_policy(generation, scored.token_logps, scored.entropy, scored.hidden,
                           output_embedding_weight(model).detach().float(), settings, SingleProcess(),
                           temperature=temperature, logit_transform=logit_transform_of(model))
    mask = generation.batch.mask
    return pd.DataFrame({"logp_before": old.logp_before.double().numpy(), "token_logps": _rows_of(old.token_logps, mask),
                         "entropy": _rows_of(old.entropy, mask), "nthr_score": _rows_of(old.scores, mask),
                         "nthr_selected": _rows_of(old.nthr_selected, mask)})


def score_after(model, generation: GenerationBatch, *, temperature: float, max_tokens: int) -> pd.DataFrame:
    """The checkpoint after the step, on the responses with measured tokens (the recorder's finish_step)."""
    batch = generation.batch
    rescored = (generation.rescored & batch.measured.any(1)).nonzero().flatten()
    logp_after = torch.full((batch.size,), math.nan, dtype=torch.float64)
    token_logps = torch.full(batch.mask.shape, math.nan)
    if len(rescored):
        sub = batch.select(rescored)
        after = score_group(model, sub, temperature=temperature, max_tokens=max_tokens)
        token_logps[rescored] = after.token_logps.float().cpu()
        logp_after[rescored] = sequence_logprob(after.token_logps, sub.measured).double().cpu()
    return pd.DataFrame({"logp_after": logp_after.numpy(), "token_logps": _rows_of(token_logps, batch.mask)})


def old_policy_scores(before: pd.DataFrame, mask: torch.Tensor) -> OldPolicyScores:
    return OldPolicyScores(token_logps=_padded(before["token_logps"], mask, torch.float32),
                           logp_before=torch.tensor(before["logp_before"].to_numpy(), dtype=torch.float32),
                           entropy=_padded(before["entropy"], mask, torch.float32),
                           scores=_padded(before["nthr_score"], mask, torch.float32),
                           nthr_selected=_padded(before["nthr_selected"], mask, torch.bool), taus={})


def assemble_step(generation: GenerationBatch, tokens: StepTokens, before: pd.DataFrame, after: pd.DataFrame,
                  window, tokenizer, settings: ProbeSettings):
    """(responses, tokens) rows of the run store for one step, as the probes write them, plus the window
    and tokenization columns (lld_probe.store.schema.RESCORE_RESPONSE_COLUMNS) and each token's text."""
    mask = generation.batch.mask
    old = old_policy_scores(before, mask)
    loss_advantages, scaled = method_weighting(generation, old, settings, SingleProcess())
    probed = ProbedBatch(generation, old, loss_advantages, scaled)
    token_logps_after = _padded(after["token_logps"], mask, torch.float32)
    token_logps_after[~mask] = math.nan
    responses = response_rows(probed, torch.tensor(after["logp_after"].to_numpy(), dtype=torch.float64))
    responses["window_steps"] = window.window_steps
    responses["checkpoint_before"] = window.before
    responses["checkpoint_after"] = window.after
    responses["tokenization"] = tokens.tokenization
    responses["roundtrip_ok"] = np.asarray(tokens.roundtrip_ok, dtype=bool)
    responses["prompt_ok"] = np.asarray(tokens.prompt_ok, dtype=bool)
    token_frame = token_rows(probed, token_logps_after)
    if token_frame is not None and len(token_frame):
        text = {int(i): tokenizer.decode([int(i)]) for i in token_frame["token_id"].unique()}
        token_frame[TOKEN_TEXT_COLUMN] = token_frame["token_id"].map(text)
    return responses, token_frame
