"""Group batches: prompt + completion token ids laid out for scoring, with the group layout
([G, T] response tokens, padded) and the map between the two.

Two masks: `mask` marks the completion tokens present in the sequence (what a scoring forward lays out
and scores), `measured` the ones the probes measure (log-likelihoods, NTHR, metrics). They differ for
tokens the policy did not write, such as a tool's or an environment's output inside a multi-turn
completion: present as context for the tokens after them, never measured."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GroupBatch:
    input_ids: torch.Tensor        # [B, L] prompt + completion, right-padded
    attention_mask: torch.Tensor   # [B, L]
    prompt_lengths: torch.Tensor   # [B]
    tokens: torch.Tensor           # [B, T] completion tokens, padded with 0
    mask: torch.Tensor             # [B, T] bool, True on completion tokens (present in the sequence)
    measured: torch.Tensor | None = None   # [B, T] bool, True on measured tokens (within mask); default mask

    def __post_init__(self):
        if self.measured is None:
            self.measured = self.mask.clone()
        elif tuple(self.measured.shape) != tuple(self.mask.shape) or bool((self.measured & ~self.mask).any()):
            raise ValueError(f"measured {tuple(self.measured.shape)} must mark completion tokens only (mask "
                             f"{tuple(self.mask.shape)})")

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    def select(self, rows: torch.Tensor) -> "GroupBatch":
        """The batch restricted to some rows (an index tensor or a bool mask)."""
        return GroupBatch(self.input_ids[rows], self.attention_mask[rows], self.prompt_lengths[rows],
                          self.tokens[rows], self.mask[rows], self.measured[rows])

    def response_view(self, states: torch.Tensor, first_position: int = 0) -> torch.Tensor:
        """From model outputs [B, L - first_position, ...] (positions first_position.. of the sequence)
        take, for completion token j of row b, the output at position prompt_length + j - 1 (the one
        that predicts it): [B, T, ...]."""
        length = self.tokens.shape[1]
        offsets = (torch.arange(length, device=states.device)[None, :]
                   + self.prompt_lengths[:, None].to(states.device) - 1 - first_position)
        offsets = offsets.clamp(max=states.shape[1] - 1)
        index = offsets.view(*offsets.shape, *([1] * (states.dim() - 2))).expand(-1, -1, *states.shape[2:])
        return states.gather(1, index)

    def first_predicting_position(self) -> int:
        """The first sequence position whose output predicts a completion token (logits before it are
        never used: a forward can skip the output layer there)."""
        return int(self.prompt_lengths.min()) - 1


def build_group_batch(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
                      measured: list | None = None) -> GroupBatch:
    """Lay out (prompt, completion) pairs; every prompt must be non-empty. measured (optional): per
    completion, one flag per token (False: in the sequence as context, not measured, e.g. a tool's output);
    None, or None for a row, measures every token."""
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"prompt_ids has {len(prompt_ids)} rows but completion_ids has {len(completion_ids)}")
    if measured is not None and len(measured) != len(completion_ids):
        raise ValueError(f"measured has {len(measured)} rows but completion_ids has {len(completion_ids)}")
    if not prompt_ids:
        raise ValueError("empty group: no responses to score")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("prompt_ids contains an empty prompt: the first completion token needs a context")
    rows = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]
    width = max(len(r) for r in rows)
    completion_width = max(1, max(len(c) for c in completion_ids))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    tokens = torch.zeros((len(rows), completion_width), dtype=torch.long)
    mask = torch.zeros((len(rows), completion_width), dtype=torch.bool)
    for row, (prompt, completion) in enumerate(zip(prompt_ids, completion_ids)):
        input_ids[row, : len(prompt) + len(completion)] = torch.tensor(list(prompt) + list(completion), dtype=torch.long)
        attention_mask[row, : len(prompt) + len(completion)] = 1
        tokens[row, : len(completion)] = torch.tensor(list(completion), dtype=torch.long)
        mask[row, : len(completion)] = True
    measured_mask = mask.clone()
    for row, flags in enumerate(measured or []):
        if flags is None:
            continue
        if len(flags) != len(completion_ids[row]):
            raise ValueError(f"measured row {row} has {len(flags)} flags for {len(completion_ids[row])} completion tokens")
        measured_mask[row, : len(flags)] = torch.tensor([bool(f) for f in flags], dtype=torch.bool)
    prompt_lengths = torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)
    return GroupBatch(input_ids, attention_mask, prompt_lengths, tokens, mask, measured_mask)
