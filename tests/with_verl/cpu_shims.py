"""Shims that let verl 0.9.1's FSDP engine run on CPU with gloo, for the tests only (the package has none).

verl has no CPU platform: it falls back to 'nvidia'. Here: a "cpu" platform registered and selected, the
FSDP language-model engine registered for device "cpu", the gloo process group created before verl would
create one, and sdpa attention (verl asks for flash_attention_2). Call `enable_cpu()` in every process
before building a worker.
"""

from __future__ import annotations

import contextlib
import os
import types

import torch

_ENABLED = False


def enable_cpu() -> None:
    """Make verl run on CPU in this process (idempotent)."""
    global _ENABLED
    if _ENABLED:
        return
    from verl.plugin.platform import PlatformBase, PlatformRegistry, set_platform

    @PlatformRegistry.register(platform="cpu")
    class PlatformCPU(PlatformBase):
        device_name = "cpu"
        vendor_name = "cpu"
        device_module = types.SimpleNamespace(
            max_memory_allocated=lambda *a, **k: 0, max_memory_reserved=lambda *a, **k: 0,
            memory_allocated=lambda *a, **k: 0, memory_reserved=lambda *a, **k: 0,
            empty_cache=lambda: None, synchronize=lambda *a: None, is_available=lambda: True,
            current_device=lambda: 0, device_count=lambda: 1, set_device=lambda *a: None,
            manual_seed=torch.manual_seed, manual_seed_all=torch.manual_seed,
            get_rng_state=torch.get_rng_state, set_rng_state=torch.set_rng_state,
            mem_get_info=lambda *a: (0, 0), reset_peak_memory_stats=lambda *a: None,
            get_device_name=lambda *a: "cpu")

        def is_available(self): return True
        def is_platform_available(self, use_smi_check=False): return True
        def current_device(self): return "cpu"      # verl moves tensors with .to(current_device())
        def device_count(self): return 1
        def set_device(self, device_index): pass
        def synchronize(self, device_index=None): pass
        def manual_seed(self, seed): torch.manual_seed(seed)
        def manual_seed_all(self, seed): torch.manual_seed(seed)
        def set_allocator_settings(self, settings): pass
        def empty_cache(self): pass
        def get_device_capability(self, device_index=0): return (None, None)
        def communication_backend_name(self): return "gloo"
        def visible_devices_envvar(self): return "CPU_VISIBLE_DEVICES"
        def nvtx_range(self, msg): return contextlib.nullcontext()
        def profiler_start(self): pass
        def profiler_stop(self): pass
        def ray_resource_name(self): return "CPU"
        def ray_noset_envvars(self): return []
        def is_ipc_supported(self): return False
        def cudart(self): return None

    os.environ["VERL_PLATFORM"] = "cpu"
    set_platform(PlatformCPU())
    from verl.workers.engine.base import EngineRegistry       # imported after the platform: it reads it on import
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead
    EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"], device="cpu")(FSDPEngineWithLMHead)
    _ENABLED = True


def init_gloo(rank: int, world_size: int, port: int) -> None:
    """The default process group (gloo) and the environment verl's Worker reads."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": "0",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size,
                                             init_method=f"tcp://127.0.0.1:{port}")
