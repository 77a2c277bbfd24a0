"""The "chain" model: a small Qwen2-architecture causal LM with the tiny model's character tokenizer,
warmed up on multi-step arithmetic chains (lld_probe.tasks.chain) with a share of realistic
mistakes in its training solutions (lld_probe.models.train_chain), stopped while groups are mixed."""

from __future__ import annotations

from pathlib import Path

CHAIN_DIR = Path(__file__).resolve().parents[2] / "data" / "chain"


def build_config(tokenizer, *, hidden_size: int = 192, layers: int = 4):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 8 // 3,
                       num_hidden_layers=layers, num_attention_heads=6, num_key_value_heads=2,
                       max_position_embeddings=256, tie_word_embeddings=True,
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                       bos_token_id=tokenizer.bos_token_id)
