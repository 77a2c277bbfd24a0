"""Machine facts that change what is fast: bfloat16 matmuls are only faster than float32 on CPUs with
native bf16 instructions (AVX512-BF16 or AMX); elsewhere they are emulated and about 2x slower."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


@functools.lru_cache(maxsize=None)
def fast_bf16(device: str = "cpu") -> bool:
    """True where bf16 compute beats float32: CUDA GPUs with bf16 support, CPUs with avx512_bf16/amx_bf16."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return False
    flags = cpuinfo.read_text(errors="ignore")
    return "avx512_bf16" in flags or "amx_bf16" in flags
