"""The token ids of a logged step's responses: the sampled ids where the log has them, else the text
re-tokenised with the run's tokenizer the way the trainer tokenised it, and checked.

Re-tokenising need not give back the sampled tokens (a sampler may emit " 1" "2" where the tokenizer
makes " 12"; a log decoded with skip_special_tokens drops special tokens). The check: the re-tokenised
completion must decode back to the logged text. A completion that does not is marked (roundtrip_ok
False) and left unmeasured (no tokens: NaN likelihoods, as a truncated response), never scored with
tokens it did not have. TRL's logged text drops the EOS token its loss scored: it is appended to every
completion shorter than max_completion_length (generation stops at EOS or at the limit).

A prompt without logged token ids is rebuilt from its text and verified the same way (lld_probe.rescore.prompts:
the check depends on how the log made the text); a response whose prompt is not verified is marked
(prompt_ok False) and left unmeasured too: its Delta would be measured under another prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .prompts import PromptBuilder


@dataclass(frozen=True)
class StepTokens:
    prompt_ids: list          # per response
    completion_ids: list      # per response: the measured tokens ([] when none)
    tokenization: list        # "ids" | "text"
    roundtrip_ok: list        # bool: the completion's tokens are the logged ones, or decode back to its text
    truncated: list           # bool: cut at the length limit and masked out of the loss (TRL mask_truncated_completions)
    measured: list = None     # per response: one flag per completion token (False: a tool's output), or None: all
    prompt_ok: list = None    # bool: the prompt's tokens are the logged ones, or rebuilt and verified


def _logged_ids(value):
    """A row's logged token ids, or None where the log has none (a missing column, None or NaN)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return [int(i) for i in value]


def step_tokens(rows: pd.DataFrame, tokenizer, prompts: PromptBuilder, *, max_completion_length: int | None,
                mask_truncated: bool = False, vocab_size: int | None = None, where: str = "") -> StepTokens:
    prompt_lists, completions, kinds, oks, cut, measured, prompt_oks = [], [], [], [], [], [], []
    eos = tokenizer.eos_token_id
    has_ids = "completion_ids" in rows.columns
    has_flags = "measured" in rows.columns      # recorded with the ids (multi-turn tools), else every token counts
    for index, row in enumerate(rows.itertuples(index=False)):
        recorded = getattr(row, "completion_ids", None) if has_ids else None
        prompt_ids = _logged_ids(getattr(row, "prompt_ids", None)) if "prompt_ids" in rows.columns else None
        prompt_ok = True
        if prompt_ids is None:
            rebuilt = prompts(row.prompt)
            prompt_ids, prompt_ok = rebuilt.ids, rebuilt.verified
        truncated = bool(getattr(row, "truncated", False)) if "truncated" in rows.columns else False
        flags = None
        if recorded is not None:
            ids, kind, ok = list(recorded), "ids", True
            flags = getattr(row, "measured", None) if has_flags else None
            flags = None if flags is None or (isinstance(flags, float) and flags != flags) else [bool(f) for f in flags]
            if flags is not None and len(flags) != len(ids):
                raise ValueError(f"{where}: response {index} has {len(flags)} measured flags for {len(ids)} tokens")
        else:
            ids = list(tokenizer(text=str(row.completion), add_special_tokens=False)["input_ids"])
            ok = tokenizer.decode(ids, skip_special_tokens=True) == str(row.completion)
            kind = "text"
            if max_completion_length is None or len(ids) < max_completion_length:
                ids = ids + ([eos] if eos is not None else [])
            elif mask_truncated:
                truncated = True
            if not ok:
                ids = []
        if not prompt_ok:            # measured under another prompt: left unmeasured
            ids, flags = [], None
        if truncated:
            ids, flags = [], None
        if vocab_size is not None and any(i >= vocab_size or i < 0 for i in list(prompt_ids) + ids):
            raise ValueError(f"{where}: response {index} has token ids outside the model's vocabulary of "
                             f"{vocab_size}: the checkpoints do not belong to this log")
        prompt_lists.append(list(prompt_ids))
        completions.append(ids)
        kinds.append(kind)
        oks.append(ok)
        cut.append(truncated)
        measured.append(flags)
        prompt_oks.append(prompt_ok)
    return StepTokens(prompt_lists, completions, kinds, oks, cut, measured, prompt_oks)


def check_tokenizer(tokens: StepTokens, tokenizer_source: str, step: int) -> None:
    """A tokenizer that reproduces fewer than half of a step's logged completions is not the run's: refused."""
    text = [ok for ok, kind in zip(tokens.roundtrip_ok, tokens.tokenization) if kind == "text"]
    failed = text.count(False)
    if text and failed * 2 > len(text):
        raise ValueError(f"tokenizer {tokenizer_source} does not reproduce the logged text of step {step} "
                         f"({failed} of {len(text)} completions do not decode back): not the run's tokenizer "
                         f"(give the right one with --tokenizer)")
