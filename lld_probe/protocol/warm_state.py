"""A warmed AdamW state for the protocol's single step: the parameters and the optimizer moments of a
training checkpoint (a `checkpoint-N` folder: model.safetensors + optimizer.pt, as `lld-probe train
--save-steps K` writes it), so that the step is a mid-training AdamW step rather than the first one
(whose update m/sqrt(v) = g/|g| is sign-like).

The optimizer.pt of a Hugging Face Trainer numbers the parameters in its param groups: first the
parameters that get weight decay, then the others (biases and norms), each in `named_parameters` order.
`trainer_param_groups` rebuilds that layout and `WarmState` checks every moment's shape against its
parameter, so a layout that does not fit is refused rather than loaded into the wrong parameters."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import torch

OPTIMIZER_FILE = "optimizer.pt"
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
# parameters without weight decay in a Hugging Face Trainer: biases and norms (by name)
NO_DECAY_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")


def resolve_checkpoint(path) -> Path:
    """A checkpoint-N folder as given, or a run folder's last checkpoint-N (highest N)."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"optimizer_state (--optimizer-state): no folder {folder}")
    if not (folder / OPTIMIZER_FILE).exists():
        checkpoints = sorted((p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                             key=lambda p: int(p.name.split("-")[-1]))
        if not checkpoints:
            raise FileNotFoundError(f"optimizer_state (--optimizer-state): {folder} holds neither {OPTIMIZER_FILE} "
                                    f"nor a checkpoint-N folder (train with --save-steps K)")
        folder = checkpoints[-1]
    if not (folder / OPTIMIZER_FILE).exists():
        raise FileNotFoundError(f"optimizer_state (--optimizer-state): {folder} has no {OPTIMIZER_FILE} "
                                f"(the checkpoint was saved with save_only_model)")
    if not any((folder / name).exists() for name in WEIGHTS_FILES):
        raise FileNotFoundError(f"optimizer_state (--optimizer-state): {folder} has no model weights "
                                f"({' or '.join(WEIGHTS_FILES)})")
    return folder


def saved_lr(checkpoint) -> float:
    """The learning rate of a checkpoint's optimizer (its scheduler's last value)."""
    saved = torch.load(Path(checkpoint) / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    return float(saved["param_groups"][0]["lr"])


def trainer_param_groups(model) -> list[list[torch.nn.Parameter]]:
    """The parameters in a Hugging Face Trainer's two AdamW groups: with weight decay, then without."""
    named = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    no_decay = [any(re.search(pattern, name.lower()) for pattern in NO_DECAY_PATTERNS) or
                isinstance(_owner(model, name), torch.nn.LayerNorm) for name, _ in named]
    return [[p for (_, p), skip in zip(named, no_decay) if not skip], [p for (_, p), skip in zip(named, no_decay) if skip]]


def _owner(model, name: str):
    module_name = name.rpartition(".")[0]
    return model.get_submodule(module_name) if module_name else model


@dataclass
class WarmState:
    """A checkpoint's optimizer state, mapped onto a model's parameters; `optimizer(lr)` gives a fresh AdamW
    holding a copy of the moments (each method's step starts from the same state)."""
    checkpoint: Path
    groups: list             # [[Parameter]] in the saved state's numbering
    state_dict: dict         # the saved optimizer state (never stepped)

    @classmethod
    def load(cls, checkpoint, model) -> "WarmState":
        checkpoint = resolve_checkpoint(checkpoint)
        saved = torch.load(checkpoint / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        groups = trainer_param_groups(model)
        sizes = [len(group["params"]) for group in saved["param_groups"]]
        if len(sizes) == 1:                  # one group: every parameter in named_parameters order
            groups = [[p for group in groups for p in group]]
        if [len(group) for group in groups] != sizes:
            raise ValueError(f"optimizer_state (--optimizer-state): {checkpoint / OPTIMIZER_FILE} has param groups "
                             f"of {sizes} parameters, the model's Trainer layout has {[len(g) for g in groups]}: "
                             f"not a checkpoint of this model")
        for group, saved_group in zip(groups, saved["param_groups"]):
            for parameter, index in zip(group, saved_group["params"]):
                moments = saved["state"].get(index)
                if moments is None or "exp_avg" not in moments:
                    raise ValueError(f"optimizer_state (--optimizer-state): parameter {index} of {checkpoint} has no "
                                     f"AdamW moments (exp_avg, exp_avg_sq): not an AdamW state after a step")
                if moments["exp_avg"].shape != parameter.shape:
                    raise ValueError(f"optimizer_state (--optimizer-state): moment {index} of {checkpoint} has shape "
                                     f"{tuple(moments['exp_avg'].shape)}, its parameter {tuple(parameter.shape)}: not "
                                     f"a checkpoint of this model")
        return cls(checkpoint, groups, saved)

    @property
    def steps(self) -> int:
        """The optimizer steps the moments have seen."""
        return int(float(next(iter(self.state_dict["state"].values()))["step"]))

    def optimizer(self, lr: float) -> torch.optim.AdamW:
        """AdamW over the model's parameters with a copy of the saved moments and step count; betas, eps and
        weight decay as saved, the learning rate set to lr (a checkpoint's own lr is the scheduler's last)."""
        optimizer = torch.optim.AdamW([{"params": group} for group in self.groups], lr=lr)
        optimizer.load_state_dict(copy.deepcopy(self.state_dict))   # a copy: the step changes moments in place;
                                                                    # the saved groups' betas, eps, decay
        for group in optimizer.param_groups:
            group["lr"] = lr
        return optimizer

    def load_parameters(self, model) -> None:
        """The checkpoint's parameters into model (same architecture; tied weights stay tied)."""
        loaded = type(model).from_pretrained(self.checkpoint, dtype=next(model.parameters()).dtype)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        if unexpected or [name for name in missing if name not in _tied_names(model)]:
            raise ValueError(f"optimizer_state (--optimizer-state): {self.checkpoint} does not hold this model's "
                             f"parameters (missing {missing[:3]}, unexpected {unexpected[:3]})")


def _tied_names(model) -> set:
    names = set(model.state_dict())
    return names - {name for name, _ in model.named_parameters()}
