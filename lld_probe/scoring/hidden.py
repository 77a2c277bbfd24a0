"""Capture of the final hidden states: the input of the output embedding (lm_head), i.e. the state
after the final norm that the unconstrained-features analysis calls h."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def capture_final_hidden(model):
    """Record lm_head's input on every forward inside the block: yields a dict whose "hidden" entry
    holds the last captured tensor [B, L, d] (detached). Works on any transformers causal LM."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError("model has no output embedding (get_output_embeddings() is None)")
    captured: dict = {}

    def hook(module, args):
        captured["hidden"] = args[0].detach()

    handle = head.register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def output_embedding_weight(model):
    """The unembedding matrix W [V, d] (lm_head weight; tied to the input embedding in many models)."""
    return model.get_output_embeddings().weight


@contextmanager
def capture_backbone_hidden(model):
    """Record the backbone's last_hidden_state [B, L, d] (after the final norm, i.e. the lm_head input) on
    every forward inside the block. Unlike capture_final_hidden it also sees forwards that never call
    lm_head as a module, such as TRL's fused LM head (which runs model.base_model, then tiles lm_head)."""
    if hasattr(model, "get_base_model"):      # a PEFT wrapper: the transformers model inside it
        model = model.get_base_model()
    backbone = getattr(model, "base_model", None)
    if backbone is None or backbone is model:
        raise ValueError(f"{type(model).__name__} exposes no separate backbone (model.base_model) to hook")
    captured: dict = {}

    def hook(module, args, output):
        state = getattr(output, "last_hidden_state", None)
        captured["hidden"] = (state if state is not None else output[0]).detach()

    handle = backbone.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()
