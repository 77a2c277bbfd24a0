"""Scoring a group with a model: per-token log-probs of the completion tokens (float32), optionally
the final hidden states that predict them and the next-token entropy (float64 for a float64 model).

Three layouts give the same numbers up to float rounding: "packed" (the real tokens end to end, each
prompt once; lld_probe.scoring.packing), "shared_prompt" (one forward per distinct prompt: the prompt
computed once into a KV cache repeated for its rows, rows padded to the longest completion) and
"rows" (full padded rows). "auto" takes the first the model supports."""

from __future__ import annotations

import warnings
import weakref
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..core import token_entropy, token_logprobs
from ..models.adapters import scoring_model
from ..models.kv_cache import forward_parameters, prefill_repeated, supports_prefill, with_cache
from .batch import GroupBatch, build_group_batch
from .hidden import capture_final_hidden
from .precision import float32_forwards, packing_tolerance
from .packing import DEFAULT_MAX_TOKENS, attention_bias, pack_rows, packing_unsupported_reason, plan_chunks, prompt_blocks

LAYOUTS = ("auto", "packed", "shared_prompt", "rows")
_PACKING_CHECKS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()    # model -> passed the packing check


def packing_verified(model) -> bool | None:
    """The result of the one-time packing check of this model (None before it ran)."""
    return _PACKING_CHECKS.get(model)


@dataclass
class ScoredGroup:
    token_logps: torch.Tensor            # [B, T] log pi(y_t | x, y_<t), 0 off mask
    hidden: torch.Tensor | None          # [B, T, d] state that predicts tokens[:, t]
    entropy: torch.Tensor | None         # [B, T]


def forward_logps(model, batch: GroupBatch, *, temperature: float = 1.0, with_hidden: bool = False,
                  with_entropy: bool = False, autocast_dtype=None, layout: str = "auto",
                  max_tokens: int = DEFAULT_MAX_TOKENS) -> ScoredGroup:
    """One forward of the batch (with gradients if enabled by the caller), in the given layout (see the
    module docstring); max_tokens bounds a packed forward (more rows take several)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    model = scoring_model(model)          # a LoRA-like PEFT wrapper: its base model, adapters inside
    device = next(model.parameters()).device
    cast = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext())
    if layout in ("auto", "packed"):
        reason = packing_unsupported_reason(model, batch)
        if reason is not None and layout == "packed":
            raise ValueError(f"packed scoring is not possible here: {reason}")
        if reason is None and (layout == "packed" or _packing_checked(model, batch, temperature, autocast_dtype)):
            return _forward_packed(model, batch, device, temperature, with_hidden, with_entropy, max_tokens, cast)
    if layout in ("auto", "shared_prompt"):
        blocks = [torch.tensor(block) for block in prompt_blocks(batch)]
        if len(blocks) > 1:          # one shared-prompt forward per distinct prompt
            parts = [forward_logps(model, batch.select(block), temperature=temperature, with_hidden=with_hidden,
                                   with_entropy=with_entropy, autocast_dtype=autocast_dtype, layout="shared_prompt")
                     for block in blocks]
            return _merge(blocks, [(part.token_logps, part.hidden, part.entropy) for part in parts], device)
    return _forward_padded(model, batch, device, temperature, with_hidden, with_entropy, cast,
                           share_prompt=layout in ("auto", "shared_prompt"))


def _forward_padded(model, batch: GroupBatch, device, temperature, with_hidden, with_entropy, cast,
                    share_prompt: bool) -> ScoredGroup:
    """Rows padded to the longest completion: the prompt once through a KV cache (share_prompt, when the
    rows share it and the model takes a cache) or full rows."""
    capture = capture_final_hidden(model) if with_hidden else nullcontext({})
    with capture as captured, cast:
        logits = _forward_shared_prompt(model, batch, device) if share_prompt else None
        if logits is not None:       # [B, T, V]: already one column per completion token
            hidden = captured["hidden"] if with_hidden else None
        else:
            # output layer only on the positions that predict completion tokens
            first = batch.first_predicting_position() if "logits_to_keep" in forward_parameters(model) else 0
            extra = {"logits_to_keep": batch.input_ids.shape[1] - first} if first else {}
            outputs = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                            use_cache=False, **extra)
            logits = batch.response_view(outputs.logits, first)
            hidden = batch.response_view(captured["hidden"], first) if with_hidden else None
    tokens, mask = batch.tokens.to(device), batch.mask.to(device)
    logps = token_logprobs(_at_least_float32(logits), tokens, mask, temperature=temperature)
    hidden = _at_least_float32(hidden) if with_hidden else None
    entropy = token_entropy(logits.detach(), mask, temperature=temperature) if with_entropy else None
    return ScoredGroup(logps, hidden, entropy)


def _forward_packed(model, batch: GroupBatch, device, temperature, with_hidden, with_entropy, max_tokens,
                    cast) -> ScoredGroup:
    """Packed forwards (one per chunk of rows): the output layer runs only where a completion token is
    predicted, and each completion token's log-prob is read at the packed position that predicts it."""
    chunks, results = plan_chunks(batch, max_tokens), []
    for rows in chunks:
        sub = batch.select(rows)
        layout = pack_rows(sub)
        keep, local = torch.unique(layout.predictor, return_inverse=True)     # positions whose outputs are used
        capture = capture_final_hidden(model) if with_hidden else nullcontext({})
        with capture as captured, cast:
            outputs = model(input_ids=layout.input_ids[None].to(device),
                            position_ids=layout.position_ids[None].to(device),
                            attention_mask=attention_bias(layout.allowed, model, device), use_cache=False,
                            logits_to_keep=keep.to(device))
        local = local.to(device)
        logits = outputs.logits[0][local]                                       # [M, V], M = real completion tokens
        tokens, mask = sub.tokens.to(device), sub.mask.to(device)
        flat_logps = token_logprobs(_at_least_float32(logits)[None], tokens[mask][None], temperature=temperature)[0]
        logps = torch.zeros(mask.shape, dtype=flat_logps.dtype, device=device).masked_scatter(mask, flat_logps)
        hidden = entropy = None
        if with_hidden:
            states = _at_least_float32(captured["hidden"][0][local])                # [M, d]
            hidden = torch.zeros(*mask.shape, states.shape[-1], dtype=states.dtype, device=device)
            hidden = hidden.masked_scatter(mask[..., None], states)
        if with_entropy:
            flat_entropy = token_entropy(logits.detach()[None], temperature=temperature)[0]
            entropy = torch.zeros(mask.shape, dtype=flat_entropy.dtype, device=device)
            entropy = entropy.masked_scatter(mask, flat_entropy)
        results.append((logps, hidden, entropy))
    return _merge(chunks, results, device)


def _merge(row_sets: list[torch.Tensor], results: list[tuple], device) -> ScoredGroup:
    """(logps, hidden, entropy) of row subsets that partition the batch -> one ScoredGroup in batch order."""
    if len(row_sets) == 1:
        return ScoredGroup(*results[0])
    inverse = torch.cat(row_sets).argsort().to(device)       # subset-major row order -> batch order
    return ScoredGroup(*[torch.cat(parts)[inverse] if parts[0] is not None else None for parts in zip(*results)])


def _at_least_float32(values: torch.Tensor) -> torch.Tensor:
    """float32, or float64 for a float64 model (the brute-force checks run one)."""
    return values if values.dtype == torch.float64 else values.float()


def _packing_checked(model, batch: GroupBatch, temperature: float, autocast_dtype=None) -> bool:
    """Once per model: packed scoring of a few rows against full rows. A model whose layers mix rows in
    a way the attention mask does not control (recurrent layers, position biases computed from the mask)
    fails it and is scored in padded rows from then on (one shared-prompt forward per prompt), with a warning.
    Its forwards run as the scoring forwards do (same autocast), at the tolerance of their precision."""
    verified = packing_verified(model)
    if verified is not None:
        return verified
    sample = _check_sample(batch)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            packed = forward_logps(model, sample, temperature=temperature, autocast_dtype=autocast_dtype,
                                   layout="packed").token_logps
            rows = forward_logps(model, sample, temperature=temperature, autocast_dtype=autocast_dtype,
                                 layout="rows").token_logps
    finally:
        model.train(was_training)
    difference = float((packed - rows).abs().max()) if sample.mask.any() else 0.0
    ok = difference <= packing_tolerance(model, autocast_dtype)
    if not ok:
        warnings.warn(f"packed scoring of {type(model).__name__} differs from full rows by {difference:.3g} in a "
                      f"token log-prob: scoring this model in padded rows instead", stacklevel=3)
    _PACKING_CHECKS[model] = ok
    return ok


def _check_sample(batch: GroupBatch, rows: int = 2, tokens: int = 16) -> GroupBatch:
    """A few rows of one prompt (when some prompt has several), completions cut to a few tokens: enough to
    see rows leak into each other, at the cost of a small forward."""
    block = max(prompt_blocks(batch), key=len)[:rows]
    lengths = batch.mask.sum(1)
    return build_group_batch([batch.input_ids[r, : int(batch.prompt_lengths[r])].tolist() for r in block],
                             [batch.tokens[r, : min(int(lengths[r]), tokens)].tolist() for r in block], pad_id=0)


def _forward_shared_prompt(model, batch: GroupBatch, device):
    """For a group whose rows share one prompt: the prompt once (all but its last token, into a KV cache
    repeated for every row), then each row's last prompt token and completion. Column j of the returned
    logits [B, T, V] predicts tokens[:, j] (the state at t-1 predicts token t), as in a forward of the full
    rows, with the prompt computed once instead of B times. None when the batch or model does not allow it."""
    prompt_length = int(batch.prompt_lengths[0])
    if (batch.size < 2 or prompt_length < 2 or not supports_prefill(model)
            or not bool((batch.prompt_lengths == prompt_length).all())
            or not bool((batch.input_ids[:, :prompt_length] == batch.input_ids[:1, :prompt_length]).all())):
        return None
    _, cache = prefill_repeated(model, batch.input_ids[:1, : prompt_length - 1].to(device), batch.size)
    if cache is None:
        return None
    rows = torch.cat([batch.input_ids[:, prompt_length - 1: prompt_length], batch.tokens[:, :-1]], dim=1)
    # right padding of short completions only reaches positions after their last token (causal attention)
    return model(input_ids=rows.to(device), use_cache=True, **with_cache(model, cache)).logits


@torch.no_grad()
def score_group(model, batch: GroupBatch, *, temperature: float = 1.0, with_hidden: bool = False,
                with_entropy: bool = False, layout: str = "auto", max_tokens: int = DEFAULT_MAX_TOKENS) -> ScoredGroup:
    """No-grad scoring in eval mode (dropout off), restoring the model's mode afterwards; in the weights'
    precision (float32 for float32 weights) under any autocast (lld_probe.scoring.precision)."""
    was_training = model.training
    model.eval()
    try:
        with float32_forwards(model):
            return forward_logps(model, batch, temperature=temperature, with_hidden=with_hidden,
                                 with_entropy=with_entropy, layout=layout, max_tokens=max_tokens)
    finally:
        model.train(was_training)
