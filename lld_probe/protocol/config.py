"""ProtocolConfig: the settings of the per-question one-step protocol (PAPER Sec. 3 and 5.3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..core import check_variants
from ..models.survey import max_new_tokens_for

OPTIMIZERS = ("sgd", "adamw")
MOMENTS = ("warm", "cold")
DEFAULT_LR = {"sgd": 1e-3, "adamw": 1e-6}   # sgd 0.05 collapsed the tiny model's pass rate (0.58 -> 0.33)


@dataclass
class ProtocolConfig:
    model: str = "tiny"
    task: str = "arithmetic"
    questions: int = 32                        # questions drawn from the task (the most sampled with `mixed`)
    mixed: int | None = None                   # stop once this many mixed groups are kept (None: all questions)
    seed: int = 0
    group_size: int = 8
    temperature: float = 1.0
    max_new_tokens: int | None = None          # None: the model's default (tiny 24, smollm2 48)
    variants: list = field(default_factory=lambda: ["grpo", "pos_only", "random", "nthr"])
    optimizer: str = "sgd"                     # the single update's optimizer: sgd | adamw (not reported by the paper)
    lr: float | None = None                    # None: DEFAULT_LR[optimizer]; the checkpoint's with optimizer_state
    optimizer_state: str | None = None         # a checkpoint-N folder (model + optimizer.pt; a run folder: its last
                                               # checkpoint): every variant's step starts from its parameters
    optimizer_moments: str | None = None       # with optimizer_state: warm (its AdamW moments and step count) |
                                               # cold (a fresh AdamW at its parameters: the control); None: warm
    step_groups: int = 1                       # > 1: also each kept group inside a step of this many consecutive kept
                                               # groups (token mean over all, as in training): Delta under its own
                                               # share alone and under the whole step (step_context.parquet)
    nthr_beta: float = 1.0                     # NTHR threshold factor (PAPER: beta = 1 in this experiment)
    nthr_eta: object = "zero"                  # factor on selected tokens' advantage (PAPER: eta = 0 here)
    clip_eps: float = 0.2
    std: str = "sample"                        # advantage std convention: sample | population | none
    std_eps: float = 1e-4
    vocab: str = "full"                        # NTHR error vectors over the full vocabulary (exact) or the group's
    anchor_self: bool = True
    fresh_samples: int | None = None           # None: group_size; 0 disables the fresh-sample check
    bf16: bool = False                         # bf16 copy samples and computes the update's gradient;
                                               # parameters, optimizer and log-likelihoods stay float32
    device: str = "auto"                       # where the model runs: auto (cuda when available) | cpu | cuda[:N]
    sampling_chunk: int = 8                    # questions whose groups are sampled in one generate call (a
                                               # decoding step costs about the same for 8 rows as for 64)

    def resolved(self) -> "ProtocolConfig":
        check_variants(self.variants)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be at least 2, got {self.group_size}")
        if self.questions < 1:
            raise ValueError(f"questions must be at least 1, got {self.questions}")
        if self.mixed is not None and not 1 <= self.mixed <= self.questions:
            raise ValueError(f"mixed must be between 1 and questions ({self.questions}), got {self.mixed}")
        if self.step_groups < 1:
            raise ValueError(f"step_groups (--step-groups) must be at least 1, got {self.step_groups}")
        if self.sampling_chunk < 1:
            raise ValueError(f"sampling_chunk must be at least 1, got {self.sampling_chunk}")
        values = asdict(self)
        values["device"] = resolve_device(self.device)
        values["lr"] = self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]
        values.update(self._resolved_state())
        values["max_new_tokens"] = max_new_tokens_for(self.model, self.max_new_tokens)
        values["fresh_samples"] = self.group_size if self.fresh_samples is None else self.fresh_samples
        return ProtocolConfig(**values)

    def _resolved_state(self) -> dict:
        """optimizer_state as its checkpoint folder, optimizer_moments filled in, lr from the checkpoint when unset."""
        if self.optimizer_moments not in (None, *MOMENTS):
            raise ValueError(f"optimizer_moments (--optimizer-moments) must be one of {MOMENTS}, got "
                             f"{self.optimizer_moments!r}")
        if self.optimizer_state is None:
            if self.optimizer_moments == "warm":
                raise ValueError("optimizer_moments (--optimizer-moments) warm needs optimizer_state "
                                 "(--optimizer-state CHECKPOINT): a fresh optimizer has no moments")
            return {"optimizer_moments": "cold"}
        if self.optimizer != "adamw":
            raise ValueError(f"optimizer_state (--optimizer-state) holds AdamW moments: it needs optimizer adamw, "
                             f"got {self.optimizer!r}")
        from .warm_state import resolve_checkpoint, saved_lr
        checkpoint = resolve_checkpoint(self.optimizer_state)
        return {"optimizer_state": str(checkpoint), "optimizer_moments": self.optimizer_moments or "warm",
                "lr": self.lr if self.lr is not None else saved_lr(checkpoint)}


def resolve_device(name: str) -> str:
    """"auto" -> "cuda" when a GPU is visible, else "cpu"; any other name is checked (a clear error for a
    typo or a GPU that is not there)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but torch sees no CUDA GPU (torch.cuda.is_available() "
                         f"is False)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} was asked for but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return str(device)
