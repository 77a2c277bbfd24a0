"""`load_model(name_or_path)` -> (model, tokenizer), ready for generation and training."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from . import smollm2
from . import tiny
from .chain import CHAIN_DIR
from .tiny import TINY_DIR

NAMED_MODELS = ("tiny", "chain", "smollm2")
SHIPPED_DIRS = {"tiny": (TINY_DIR, "train_tiny"), "chain": (CHAIN_DIR, "train_chain")}


def resolve_model_path(name_or_path: str) -> str:
    """"tiny", "chain" and "smollm2" map to their folders; anything else is a local folder or a hub id."""
    if name_or_path in SHIPPED_DIRS:
        folder, script = SHIPPED_DIRS[name_or_path]
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"the {name_or_path} model is missing from {folder}: regenerate it with "
                                    f"`python -m lld_probe.models.{script}`")
        return str(folder)
    if name_or_path == "smollm2":
        return str(smollm2.converted_dir())
    return str(name_or_path)


def looks_like_path(name: str) -> bool:
    """A local path rather than a hub id ("org/name"): absolute, explicitly relative, or deeper than org/name."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or name.count(os.sep) > 1


def check_model_location(path: str) -> None:
    """A missing folder, or a folder that holds no model, is named in one line."""
    folder = Path(path).expanduser()
    if not folder.exists():
        if looks_like_path(path):
            raise FileNotFoundError(f"model folder {folder} does not exist")
        return                                          # a hub id
    if folder.is_file():
        raise ValueError(f"{folder} is a file, not a model folder (a folder with config.json, weights and "
                         f"tokenizer files)")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not a model folder: it has no config.json (a transformers model folder "
                         f"holds config.json, weights and tokenizer files)")


def load_model(name_or_path: str = "tiny", *, dtype: torch.dtype = torch.float32, device: str | None = None):
    """Load a causal LM and its tokenizer by name ("tiny", "chain", "smollm2"), local folder or hub id.

    The tokenizer pads on the left (for generation) and has a pad token (eos when it had none);
    the model's generation config carries the same pad and eos ids.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name_or_path)
    check_model_location(path)
    try:
        tokenizer = tiny.load_tokenizer(path) if tiny.is_tiny_folder(path) else AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as error:
        if Path(path).exists():
            raise FileNotFoundError(f"could not load the model in folder {path}: {error}") from error
        offline = " (HF_HUB_OFFLINE is set: only cached models load)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise FileNotFoundError(f"could not load model id {name_or_path!r} from the Hugging Face hub{offline}: "
                                f"{str(error).splitlines()[0]}") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        if tokenizer.eos_token_id is not None:
            model.generation_config.eos_token_id = tokenizer.eos_token_id
    embeddings = model.get_output_embeddings()
    if embeddings is not None and embeddings.weight.shape[0] < len(tokenizer):
        raise ValueError(f"model {name_or_path!r} has {embeddings.weight.shape[0]} output rows but the "
                         f"tokenizer has {len(tokenizer)} tokens")
    if device:
        model.to(device)
    return model, tokenizer
