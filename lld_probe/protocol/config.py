"""ProtocolConfig: the settings of the per-question one-step protocol (PAPER Sec. 3 and 5.3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..core import NTHRSettings, check_methods, setting
from ..models.defaults import completion_length_for

OPTIMIZERS = ("sgd", "adamw")
MOMENTS = ("warm", "cold")
DEFAULT_LR = {"sgd": 1e-3, "adamw": 1e-6}   # sgd 0.05 collapsed the tiny model's pass rate (0.58 -> 0.33)


@dataclass
class ProtocolConfig(NTHRSettings):
    """The per-question experiment's settings; NTHR's come from NTHRSettings, with the paper's values for this
    experiment as defaults (beta = 1, eta = 0) and the exact full vocabulary."""
    nthr_eta: str = setting("zero", "factor on the advantage of selected tokens (PAPER: eta = 0 in this "
                                    "experiment): paper | zero | p | 1-p | a number in [0, 1]")
    nthr_vocab: str = setting("full", "full: exact | group: the paper's V* restriction")
    model: str = setting("tiny", "tiny | chain (the LLD testbed) | smollm2 | a model folder or hub id")
    task: str = setting("arithmetic", "arithmetic | arithmetic2 | arithmetic3 | chain | questions.jsonl "
                                      "(prompt/answer, GSM8K question/answer '#### N', MATH problem/solution "
                                      "\\boxed{}) | hf:PATH_OR_NAME (a datasets data set: a save_to_disk folder or a hub name)")
    questions: int = setting(32, "questions drawn from the task (the most sampled with `mixed`)")
    mixed: int | None = setting(None, "stop once this many mixed groups are kept (None: all questions)")
    seed: int = setting(0, "seed of the questions, sampling and the random control")
    group_size: int = setting(8, "responses per question (G)")
    temperature: float = setting(1.0, "sampling temperature")
    max_new_tokens: int | None = setting(None, "None: the model's default (lld_probe.models.defaults)")
    methods: list = setting(["grpo", "pos_only", "random", "nthr"], "methods compared, each from the same start",
                             internal=True)
    optimizer: str = setting("sgd", "the single update's optimizer: sgd | adamw (not reported by the paper)",
                             internal=True)
    lr: float | None = setting(None, "None: DEFAULT_LR[optimizer]; the checkpoint's with optimizer_state", internal=True)
    optimizer_state: str | None = setting(None, "a training checkpoint (checkpoint-N with optimizer.pt, or a run "
                                                "folder: its last one; train --save-steps K writes them): every "
                                                "method's step starts from its parameters and AdamW moments")
    optimizer_moments: str | None = setting(None, "with optimizer_state: warm (its AdamW moments and step count) | "
                                                  "cold (a fresh AdamW at its parameters: the control); None: warm",
                                            internal=True)
    step_groups: int = setting(1, "> 1: also Delta of each kept group inside a step of this many consecutive kept "
                                  "groups (token mean, as in training): under its own share of the step alone and "
                                  "under the whole step (step_context.parquet)")
    clip_eps: float = setting(0.2, "PPO clip epsilon of the update's loss")
    std: str = setting("sample", "advantage std convention: sample | population | none")
    std_eps: float = setting(1e-4, "epsilon added to the advantage std")
    fresh_samples: int | None = setting(None, "fresh samples after the update for the pass rate (None: group "
                                              "size; 0 disables)")
    bf16: bool = setting(False, "bf16 copy for sampling and the update's gradient (float32 parameters, "
                                "optimizer and log-likelihoods)")
    device: str = setting("auto", "auto (cuda when torch sees a GPU, else cpu) | cpu | cuda | cuda:N")
    sampling_chunk: int = setting(8, "questions whose groups are sampled in one generate call (a decoding step "
                                     "costs about the same for 8 rows as for 64)")

    def resolved(self) -> "ProtocolConfig":
        check_methods(self.methods)
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
        values["max_new_tokens"] = completion_length_for(self.model, self.max_new_tokens)
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
