"""Checkpoint folders as models and tokenizers: checked before any work starts, loaded one at a time."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models import tiny
from ..models.loading import check_model_location, resolve_model_path


def model_location(name_or_path) -> str:
    """A folder (or a named model: tiny, smollm2) that must hold a model; a one-line error otherwise."""
    path = resolve_model_path(str(name_or_path))
    try:
        check_model_location(path)
    except (FileNotFoundError, ValueError) as error:
        raise type(error)(f"checkpoint {error}") from None
    return path


def vocabulary_size(path) -> int | None:
    """The model's vocabulary size from its config.json (no weights loaded)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        values = json.loads(config.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config}: malformed JSON ({error.msg}): not a model checkpoint") from error
    size = values.get("vocab_size") or values.get("text_config", {}).get("vocab_size")
    return int(size) if size else None


def load_tokenizer(name_or_path):
    """The tokenizer of a model folder or name (the tiny model's character-level one for its folders)."""
    from transformers import AutoTokenizer
    path = resolve_model_path(str(name_or_path))
    try:
        return tiny.load_tokenizer(path) if tiny.is_tiny_folder(path) else AutoTokenizer.from_pretrained(path)
    except Exception as error:
        raise ValueError(f"tokenizer {name_or_path}: cannot be loaded ({str(error).splitlines()[0]})") from error


def load_checkpoint(path, *, dtype: torch.dtype = torch.float32, device: str | None = None):
    """The causal LM in a checkpoint folder, in eval mode on `device`; a one-line error naming the folder."""
    from transformers import AutoModelForCausalLM
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    except Exception as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"checkpoint {path}: not a loadable model ({message})") from error
    if device:
        model.to(device)
    return model.eval()
