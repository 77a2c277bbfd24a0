"""The "tiny" model: a ~1.8M-parameter Qwen2-architecture causal LM with a character-level tokenizer,
warmed up on the arithmetic task (lld_probe.models.train_tiny) and stopped while still imperfect."""

from __future__ import annotations

from pathlib import Path

TINY_DIR = Path(__file__).resolve().parents[2] / "data" / "tiny"
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]
CHARACTERS = [chr(code) for code in range(32, 127)] + ["\n"]


def build_tokenizer():
    """Character-level tokenizer: one token per printable ASCII character, plus pad/eos/bos/unk."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), "isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>", padding_side="left")


def build_config(tokenizer):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=len(tokenizer), hidden_size=192, intermediate_size=512,
                       num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=2,
                       max_position_embeddings=256, tie_word_embeddings=True,
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                       bos_token_id=tokenizer.bos_token_id)


def is_tiny_folder(path) -> bool:
    """A folder written by lld_probe.models.train_tiny (its tokenizer is character-level)."""
    return (Path(path) / "training.json").is_file() and (Path(path) / "tokenizer.json").is_file()


def load_tokenizer(path):
    """The character-level tokenizer from a tiny-model folder. AutoTokenizer would map the folder's
    model type (qwen2) to Qwen2's byte-level pre-tokenizer and silently drop the spaces."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(Path(path) / "tokenizer.json"), pad_token="<pad>",
                                   eos_token="<eos>", bos_token="<bos>", unk_token="<unk>", padding_side="left")
