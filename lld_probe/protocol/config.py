"""ProtocolConfig: the settings of the per-question one-step protocol (PAPER Sec. 3 and 5.3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..core import check_variants
from ..models.survey import max_new_tokens_for

OPTIMIZERS = ("sgd", "adamw")
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
    lr: float | None = None                    # None: DEFAULT_LR[optimizer]
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
        if self.sampling_chunk < 1:
            raise ValueError(f"sampling_chunk must be at least 1, got {self.sampling_chunk}")
        values = asdict(self)
        values["device"] = resolve_device(self.device)
        values["lr"] = self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]
        values["max_new_tokens"] = max_new_tokens_for(self.model, self.max_new_tokens)
        values["fresh_samples"] = self.group_size if self.fresh_samples is None else self.fresh_samples
        return ProtocolConfig(**values)


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
