"""Mixed precision for the protocol: float32 master parameters (the measured log-likelihoods), and
optionally a bfloat16 copy that samples and computes gradients (2-4x faster on CPUs with bf16)."""

from __future__ import annotations

import copy

import torch


class ComputeCopy:
    """master: the float32 model that is updated and scored. compute: the model that samples and
    runs the update's forward+backward (its gradients are cast onto the master's parameters); the
    master itself unless bf16=True."""

    def __init__(self, master, *, bf16: bool = False):
        self.master = master
        self.compute = copy.deepcopy(master).to(torch.bfloat16) if bf16 else master

    @property
    def separate(self) -> bool:
        return self.compute is not self.master

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the master parameters into the compute copy (cast to its dtype)."""
        if self.separate:
            for target, source in zip(self.compute.parameters(), self.master.parameters()):
                target.copy_(source)
