"""The old policy's final hidden states from inside verl's engine forward, and the output embedding.

`HiddenStateCapture` wraps one engine's `forward_step` (on the instance; verl is unchanged): while active, a
forward hook on the model's backbone records its last hidden state (after the final norm: the state that the
output layer turns into logits), and the wrapper adds it to the micro-batch's model outputs as per-sequence
values ("lld_hidden", a jagged tensor like verl's own log_probs). verl's postprocessing then concatenates the
micro-batches and undoes its dynamic-batch reordering for it exactly as for log_probs. With remove-padding the
backbone sees the micro-batch packed as one row ([1, N (+ pad), d]), cut back into sequences by the micro-batch's
cu_seqlens (the input ids' offsets); without it, padded rows [b, L, d] are cut to each sequence's length.
"""

from __future__ import annotations

import torch

from ...scoring.hidden import capture_backbone_hidden

HIDDEN_KEY = "lld_hidden"


class HiddenStateCapture:
    def __init__(self, engine):
        sequence_parallel = int(getattr(engine, "ulysses_sequence_parallel_size", 1) or 1)
        if sequence_parallel > 1:
            raise ValueError(f"ulysses_sequence_parallel_size={sequence_parallel}: each process sees a slice of "
                             f"every sequence, so the probes cannot read whole hidden states; use 1")
        self.engine = engine
        self.active = False
        self._forward_step = engine.forward_step
        engine.forward_step = self._capturing_forward_step

    def _capturing_forward_step(self, micro_batch, loss_function, forward_only):
        if not self.active:
            return self._forward_step(micro_batch, loss_function, forward_only)
        with capture_backbone_hidden(self.engine.module) as captured:
            loss, output = self._forward_step(micro_batch, loss_function, forward_only)
        if "hidden" not in captured:
            raise RuntimeError("the backbone hook saw no forward inside verl's forward_step")
        output["model_output"][HIDDEN_KEY] = per_sequence(captured["hidden"], micro_batch["input_ids"],
                                                          packed=_remove_padding(micro_batch))
        return loss, output


def _remove_padding(micro_batch) -> bool:
    from verl.utils import tensordict_utils as tu
    return bool(tu.get_non_tensor_data(data=micro_batch, key="use_remove_padding", default=True))


def per_sequence(hidden: torch.Tensor, input_ids: torch.Tensor, *, packed: bool) -> torch.Tensor:
    """The backbone's output for a micro-batch -> a jagged tensor with one [length_b, d] entry per sequence."""
    offsets = input_ids.offsets().to(hidden.device)
    lengths = offsets.diff()
    total = int(offsets[-1])
    if packed:
        if hidden.shape[0] != 1 or hidden.shape[1] < total:
            raise RuntimeError(f"packed micro-batch of {total} tokens, but the backbone returned {tuple(hidden.shape)}")
        values = hidden[0, :total]
    else:
        if hidden.shape[0] != len(lengths):
            raise RuntimeError(f"{len(lengths)} sequences, but the backbone returned {tuple(hidden.shape)}")
        values = torch.cat([hidden[row, : int(n)] for row, n in enumerate(lengths)])
    return torch.nested.nested_tensor_from_jagged(values.detach(), offsets=offsets)


def full_output_embedding(module) -> torch.Tensor:
    """The output embedding W [V, d] of an FSDP-sharded model, whole on every process (a collective: every
    process must call it)."""
    weight = module.get_output_embeddings().weight
    weight = weight.detach()
    if hasattr(weight, "full_tensor"):        # a DTensor shard (FSDP2)
        weight = weight.full_tensor()
    return weight
