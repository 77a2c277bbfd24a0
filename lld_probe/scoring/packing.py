"""Packed scoring layout: the rows of a batch laid end to end in one sequence, each distinct prompt once,
with an attention mask that lets a completion token see its own prompt and its own earlier tokens only.

A forward over it costs the real tokens: rows padded to the longest completion are about half padding
for sampled groups, and a group's prompt is otherwise computed once per row. The numbers equal a forward
of the full rows up to float rounding (position ids restart for every row, so rotary and absolute
position embeddings see what they would see in the row's own sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.kv_cache import forward_parameters, non_attention_layers
from .batch import GroupBatch

DEFAULT_MAX_TOKENS = 512           # packed tokens per forward: attention under a custom mask costs max_tokens^2


@dataclass
class PackedLayout:
    input_ids: torch.Tensor      # [N] each distinct prompt, then the inputs of its rows' completions
    position_ids: torch.Tensor   # [N] position of each token in its own row's sequence
    allowed: torch.Tensor        # [N, N] bool: query position may attend key position
    predictor: torch.Tensor      # [M] packed position whose output predicts each completion token (batch.mask order)


def pack_rows(batch: GroupBatch) -> PackedLayout:
    """The packed layout of a batch. Completion token j of row b is predicted by the last prompt token
    (j = 0) or by completion token j - 1 of the same row, as in the row's own sequence."""
    ids, positions, segments, owners, predictor = [], [], [], [], []
    lengths = batch.mask.sum(1).tolist()
    predictor_of_row: dict[int, list[int]] = {}
    for segment, rows in enumerate(prompt_blocks(batch)):
        prompt = batch.input_ids[rows[0], : int(batch.prompt_lengths[rows[0]])].tolist()
        start = len(ids)
        ids += prompt
        positions += range(len(prompt))
        segments += [segment] * len(prompt)
        owners += [-1] * len(prompt)                          # -1: a prompt token, seen by every row of the prompt
        for row in rows:
            length = int(lengths[row])
            first = len(ids)
            inputs = batch.tokens[row, : max(length - 1, 0)].tolist()    # the last token predicts nothing
            ids += inputs
            positions += range(len(prompt), len(prompt) + len(inputs))
            segments += [segment] * len(inputs)
            owners += [row] * len(inputs)
            predictor_of_row[row] = ([start + len(prompt) - 1] + list(range(first, first + len(inputs))))[:length]
    for row in range(batch.size):                             # batch.mask order: row-major
        predictor += predictor_of_row[row]
    position_ids = torch.tensor(positions, dtype=torch.long)
    segment = torch.tensor(segments, dtype=torch.long)
    owner = torch.tensor(owners, dtype=torch.long)
    same_row = (owner[None, :] == -1) | (owner[None, :] == owner[:, None])
    allowed = (segment[:, None] == segment[None, :]) & same_row & (position_ids[None, :] <= position_ids[:, None])
    return PackedLayout(torch.tensor(ids, dtype=torch.long), position_ids, allowed,
                        torch.tensor(predictor, dtype=torch.long))


def prompt_blocks(batch: GroupBatch) -> list[list[int]]:
    """The rows of each distinct prompt, in order of first appearance."""
    blocks: dict[tuple, list[int]] = {}
    for row in range(batch.size):
        blocks.setdefault(tuple(batch.input_ids[row, : int(batch.prompt_lengths[row])].tolist()), []).append(row)
    return list(blocks.values())


def plan_chunks(batch: GroupBatch, max_tokens: int = DEFAULT_MAX_TOKENS) -> list[torch.Tensor]:
    """Row sets of about max_tokens packed tokens at most: whole prompts (a prompt and its rows) while they
    fit; a prompt with more than that is split into near-equal parts, each with the prompt (a part may
    exceed max_tokens by one row; a single longer row is a part of its own)."""
    inputs = (batch.mask.sum(1) - 1).clamp(min=0).tolist()      # a row's last token is not an input
    chunks, current, used = [], [], 0
    for rows in prompt_blocks(batch):
        prompt_length = int(batch.prompt_lengths[rows[0]])
        row_tokens = sum(int(inputs[r]) for r in rows)
        if prompt_length + row_tokens > max_tokens:
            parts = -(-row_tokens // max(max_tokens - prompt_length, 1))
            target, part, part_tokens = row_tokens / parts, [], 0
            for row in rows:
                part.append(row)
                part_tokens += int(inputs[row])
                if part_tokens >= target:
                    chunks.append(part)
                    part, part_tokens = [], 0
            if part:
                chunks.append(part)
            continue
        if current and used + prompt_length + row_tokens > max_tokens:
            chunks.append(current)
            current, used = [], 0
        current, used = current + rows, used + prompt_length + row_tokens
    if current:
        chunks.append(current)
    return [torch.tensor(sorted(chunk), dtype=torch.long) for chunk in chunks]


def packing_unsupported_reason(model, batch: GroupBatch | None = None) -> str | None:
    """Why this model cannot score a packed sequence exactly (None if it can): it needs position ids, an
    attention implementation that takes a custom 4D mask, attention-only layers, and rows within any
    sliding window."""
    parameters = forward_parameters(model)
    if "position_ids" not in parameters or "logits_to_keep" not in parameters:
        return f"{type(model).__name__}.forward takes no position_ids or logits_to_keep"
    config = getattr(model, "config", None)
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in ("sdpa", "eager"):
        return f"attention implementation {implementation!r} (packing needs 'sdpa' or 'eager' for a custom mask)"
    layer_types = set(getattr(config, "layer_types", None) or [])
    if non_attention_layers(model):
        return f"layer types {non_attention_layers(model)} are not attention layers"
    window = getattr(config, "sliding_window", None)
    windowed = "sliding_attention" in layer_types or (not layer_types and getattr(config, "use_sliding_window", True))
    if window and windowed and batch is not None:
        longest = int((batch.prompt_lengths + batch.mask.sum(1)).max())
        if longest > window:
            return f"rows of {longest} tokens exceed the sliding window ({window})"
    return None


def attention_bias(allowed: torch.Tensor, model, device) -> torch.Tensor:
    """The [1, 1, N, N] mask in the form the model's attention takes: bool for sdpa, additive for eager."""
    if model.config._attn_implementation == "sdpa":
        return allowed[None, None].to(device)
    dtype = next(model.parameters()).dtype
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return bias.masked_fill_(~allowed.to(device), torch.finfo(dtype).min)[None, None]
