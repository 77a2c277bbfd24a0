"""Between verl's batch layout and the probes' (plain torch, no verl import).

verl holds a generation batch as left-padded prompts [B, P], right-padded responses [B, R], an
attention_mask [B, P + R] and a response_mask [B, R]; its engine returns per-sequence outputs packed end to
end (a jagged tensor: row b's values at offsets[b]..offsets[b+1], the prompt's real tokens then the
response's). The probes hold the same rows as token lists (lld_probe.scoring.GroupBatch: tokens[b, t] is
completion token t of row b). The output at sequence position i predicts token i + 1, so completion token t
of a row with a P-token prompt is predicted at position P + t - 1.
"""

from __future__ import annotations

import torch


def token_lists(prompts: torch.Tensor, responses: torch.Tensor, attention_mask: torch.Tensor,
                response_mask: torch.Tensor) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt token lists, completion token lists) of verl's rows. The response mask must cover each response's
    real tokens from its first one on (single-turn rollouts); a mask with holes (tool outputs in multi-turn
    rollouts) is refused."""
    width = prompts.shape[1]
    prompt_mask = attention_mask[:, :width].bool()
    real = attention_mask[:, width:].bool()
    if not torch.equal(real, response_mask.bool()):
        raise ValueError("response_mask differs from the responses' attention mask (multi-turn rollouts with "
                         "masked tool tokens, actor_rollout_ref.rollout.multi_turn): the probes support single-turn "
                         "responses only")
    lengths = real.sum(1)
    prefix = torch.arange(real.shape[1])[None, :] < lengths[:, None]
    if not torch.equal(prefix, real.cpu()):
        raise ValueError("a response's mask is not a prefix (right padding expected)")
    prompt_ids = [row[mask].tolist() for row, mask in zip(prompts.cpu(), prompt_mask.cpu())]
    completion_ids = [row[: int(n)].tolist() for row, n in zip(responses.cpu(), lengths.cpu())]
    return prompt_ids, completion_ids


def response_values(values: torch.Tensor, offsets: torch.Tensor, prompt_lengths, completion_lengths,
                    width: int) -> torch.Tensor:
    """Per-sequence outputs packed end to end (values [N, ...], row b at offsets[b]:offsets[b+1]) -> the outputs
    that predict each completion token, [B, width, ...] (0 past a completion's end): completion token t of row b
    is predicted at packed position offsets[b] + prompt_lengths[b] + t - 1."""
    offsets = torch.as_tensor(offsets, dtype=torch.long).cpu()
    prompt_lengths = torch.as_tensor(prompt_lengths, dtype=torch.long)
    completion_lengths = torch.as_tensor(completion_lengths, dtype=torch.long)
    rows = len(prompt_lengths)
    if len(offsets) != rows + 1:
        raise ValueError(f"offsets has {len(offsets)} entries for {rows} rows (expected rows + 1)")
    if not torch.equal(offsets.diff(), prompt_lengths + completion_lengths):
        raise ValueError("the packed outputs' sequence lengths differ from prompt + completion lengths")
    out = values.new_zeros((rows, width, *values.shape[1:]))
    for row in range(rows):
        count = int(completion_lengths[row])
        start = int(offsets[row] + prompt_lengths[row]) - 1
        out[row, :count] = values[start: start + count]
    return out


def nested_parts(nested: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, offsets) of a jagged nested tensor."""
    return nested.values(), nested.offsets()


def to_response_width(advantages: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """The probes' advantages ([B] per response, or [B, T] per completion token) -> verl's [B, R] token layout,
    0 outside the response mask."""
    mask = response_mask.bool()
    out = torch.zeros(mask.shape, dtype=torch.float32)
    if advantages.dim() == 1:
        out = advantages.float()[:, None].expand(mask.shape).clone()
    else:
        width = min(advantages.shape[1], mask.shape[1])
        out[:, :width] = advantages[:, :width].float()
    return out.masked_fill(~mask.cpu(), 0.0)


def sequence_advantages(advantages: torch.Tensor, response_mask: torch.Tensor, *, atol: float = 1e-6) -> torch.Tensor:
    """verl's token advantages [B, R] -> one per response [B]. Outcome estimators (grpo, rloo, ...) give every token
    of a response the same value; varying values (a critic's GAE) are refused."""
    mask = response_mask.bool().cpu()
    values = advantages.float().cpu()
    first = torch.where(mask.any(1), values[torch.arange(len(mask)), mask.float().argmax(1)], torch.zeros(len(mask)))
    spread = ((values - first[:, None]).abs() * mask).amax(1) if mask.numel() else torch.zeros(len(mask))
    if bool((spread > atol).any()):
        raise ValueError("verl's advantages vary within a response (algorithm.adv_estimator is not an outcome "
                         "estimator such as grpo): the probes need one advantage per response")
    return first
