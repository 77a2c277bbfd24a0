"""NTHR's settings (PAPER: NTHR): the one definition that the probes, the TRL config, the protocol and the
command line all build on. Help texts live here; the command line is generated from them."""

import math
from dataclasses import dataclass, field

from .advantages import parse_eta


def setting(default, help: str, **metadata):
    """A dataclass field with its help text (shown by `lld-probe ... --help` and TRL's parser)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class NTHRSettings:
    nthr_beta: float = setting(1.0, "NTHR threshold factor: tau = nthr_beta * min anchor of the correct responses; "
                                    "-inf selects every incorrect token (not TRL's KL `beta`)")
    nthr_eta: str = setting("paper", "factor on the advantage of selected tokens: paper (2|0.5 - p|) | zero | p | "
                                     "1-p | a number in [0, 1]")
    nthr_vocab: str = setting("group", "group: error vectors restricted to the group's tokens (the paper's V*, "
                                       "cheaper) | full: exact")
    nthr_anchor_self: bool = setting(True, "a correct response's anchor includes its interaction with itself "
                                           "(paper); False leaves it out")

    def __post_init__(self):
        if isinstance(self.nthr_beta, str):
            self.nthr_beta = float(self.nthr_beta)
        if math.isnan(self.nthr_beta) or self.nthr_beta == math.inf:
            raise ValueError(f"nthr_beta must be a finite number or -inf, got {self.nthr_beta}")
        self.nthr_eta = str(self.nthr_eta)
        self.eta_policy       # checked here, parsed where used
        if self.nthr_vocab not in ("full", "group"):
            raise ValueError(f"nthr_vocab must be 'full' or 'group', got {self.nthr_vocab!r}")

    @property
    def eta_policy(self):
        """nthr_eta as the advantage functions take it: a policy name or a float."""
        return parse_eta(self.nthr_eta)
