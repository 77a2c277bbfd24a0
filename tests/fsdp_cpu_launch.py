"""`lld-probe train` with accelerate's FSDP forced on CPU processes (accelerate turns FSDP into DDP on a CPU):
the FSDP plugin read from the environment (ACCELERATE_USE_FSDP, FSDP_VERSION, ...) is kept. For tests only."""

from __future__ import annotations

import sys

import accelerate.state
from accelerate.utils import DistributedType

_original_init = accelerate.state.AcceleratorState.__init__


def _init_keeping_fsdp(self, *args, fsdp_plugin=None, **kwargs):
    _original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        # every later AcceleratorState() copies PartialState's distributed type over its own
        accelerate.state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin


accelerate.state.AcceleratorState.__init__ = _init_keeping_fsdp

if __name__ == "__main__":
    from lld_probe.cli import main
    sys.exit(main(sys.argv[1:]))
