"""Model forms beyond a plain attention LM with logits = W h: layers that are not attention (scored in full
rows), PEFT adapters (scored packed through the base model) and logit transforms (softcapping, scales)."""

from __future__ import annotations

import pytest
import torch

from lld_probe.scoring import build_group_batch, score_group

PROMPTS = [[1, 2, 3, 4, 5]] * 3 + [[6, 7, 8]] * 2
COMPLETIONS = [[9, 10, 11], [12, 13], [14], [15, 16, 17, 18], [19]]


def full_row_logprobs(model, batch) -> torch.Tensor:
    """Independent reference: one forward per full row (no padding, no cache), float32 log-softmax of the
    model's own logits; the state at t-1 predicts token t. [B, T], 0 off mask."""
    out = torch.zeros(batch.mask.shape, dtype=torch.float32)
    with torch.no_grad():
        for row in range(batch.size):
            prompt_length, length = int(batch.prompt_lengths[row]), int(batch.mask[row].sum())
            ids = batch.input_ids[row, : prompt_length + length]
            logps = torch.log_softmax(model(input_ids=ids[None]).logits[0].float(), dim=-1)
            for j in range(length):
                out[row, j] = logps[prompt_length + j - 1, ids[prompt_length + j]]
    return out


def tiny_hybrid_model(vocab_size=64, kind="lfm2"):
    """A tiny random LFM2 (a short-convolution layer, then an attention layer) or Qwen3-Next (a linear-attention
    layer, then an attention layer)."""
    import transformers
    torch.manual_seed(0)
    if kind == "lfm2":
        config = transformers.Lfm2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                         full_attn_idxs=[1], pad_token_id=0)
    else:
        config = transformers.Qwen3NextConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=16, linear_num_value_heads=2, linear_num_key_heads=2,
            linear_key_head_dim=8, linear_value_head_dim=8, num_experts=2, num_experts_per_tok=1,
            moe_intermediate_size=16, shared_expert_intermediate_size=16,
            layer_types=["linear_attention", "full_attention"], pad_token_id=0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("kind, layer_type", [("lfm2", "conv"), ("qwen3_next", "linear_attention")])
@pytest.mark.parametrize("layout", ["auto", "shared_prompt", "rows"])
def test_a_model_with_non_attention_layers_is_scored_in_full_rows(layout, kind, layer_type):
    from lld_probe.models.kv_cache import prefill_unsupported_reason, supports_prefill
    from lld_probe.scoring.packing import packing_unsupported_reason
    model = tiny_hybrid_model(kind=kind)
    assert layer_type in prefill_unsupported_reason(model) and not supports_prefill(model)
    assert layer_type in packing_unsupported_reason(model)
    batch = build_group_batch(PROMPTS, COMPLETIONS, pad_id=0)
    scored = score_group(model, batch, layout=layout)
    torch.testing.assert_close(scored.token_logps, full_row_logprobs(model, batch), rtol=0, atol=1e-5)


@pytest.mark.integration
def test_the_trainer_runs_a_step_on_a_model_with_non_attention_layers(tmp_path):
    from lld_probe.integrations.trl import LLDConfig, LLDGRPOTrainer
    from lld_probe.integrations.trl.run import build_dataset, reward_function
    from lld_probe.models import load_model
    from lld_probe.store.run_store import read_run_store
    from lld_probe.tasks import get_task
    _, tokenizer = load_model("tiny")
    model = tiny_hybrid_model(len(tokenizer))
    model.config.eos_token_id, model.config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    task = get_task("arithmetic")
    config = LLDConfig(output_dir=str(tmp_path / "hybrid"), method="nthr", num_generations=4,
                       per_device_train_batch_size=8, max_completion_length=6, max_steps=1, use_cpu=True,
                       bf16=False, report_to=[], save_strategy="no", disable_tqdm=True, probe_set_size=0)
    trainer = LLDGRPOTrainer(model, [reward_function(task)], config, build_dataset(task, tokenizer, 8, seed=0),
                             processing_class=tokenizer)
    trainer.train()
    store = read_run_store(tmp_path / "hybrid")
    assert len(store.responses) == 8


def test_a_lora_model_is_scored_packed_through_its_base_model():
    """PeftModel.forward takes no position_ids: scoring runs the base model, whose layers hold the adapter.
    Packed equals full rows and an independent float32 forward of the PEFT model; the adapter matters."""
    from peft import LoraConfig, get_peft_model

    from lld_probe.models import load_model
    from lld_probe.scoring import forward_logps
    from lld_probe.scoring.packing import packing_unsupported_reason
    model, _ = load_model("tiny")
    torch.manual_seed(0)
    # init_lora_weights=False: random B, so the adapter changes the numbers
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False)).eval()
    assert packing_unsupported_reason(lora) is not None        # the wrapper's own forward cannot pack
    batch = build_group_batch(PROMPTS, COMPLETIONS, pad_id=0)
    packed = score_group(lora, batch, layout="packed", with_hidden=True)
    rows = score_group(lora, batch, layout="rows", with_hidden=True)
    reference = full_row_logprobs(lora, batch)
    torch.testing.assert_close(packed.token_logps, rows.token_logps, rtol=0, atol=1e-5)
    torch.testing.assert_close(packed.token_logps, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(packed.hidden[batch.mask], rows.hidden[batch.mask], rtol=0, atol=1e-5)
    with lora.disable_adapter():
        assert float((score_group(lora, batch, layout="packed").token_logps - reference).abs().max()) > 1e-2
    # with gradients (the loss's forward): the adapter's parameters get them through the packed forward
    lora.zero_grad(set_to_none=True)
    forward_logps(lora, batch, layout="packed").token_logps.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora.named_parameters() if "lora_" in n)


def tiny_transformed_model(kind: str):
    """Tiny random float64 causal LMs whose logits are a transform of W h: Gemma-2 soft-capping (cap 5, on
    large logits so that the cap bends them), Cohere's logit_scale, Granite's logits_scaling. Untied output
    embedding, so that the gradient with respect to lm_head's weight is the output layer's alone."""
    import transformers
    torch.manual_seed(0)
    common = dict(vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, tie_word_embeddings=False, pad_token_id=0,
                  bos_token_id=2, eos_token_id=1)
    if kind == "gemma2":
        config = transformers.Gemma2Config(**common, head_dim=16, final_logit_softcapping=5.0,
                                           query_pre_attn_scalar=16, sliding_window=64)
    elif kind == "cohere":
        config = transformers.CohereConfig(**common, logit_scale=0.5)
    else:
        config = transformers.GraniteConfig(**common, logits_scaling=4.0)
    model = transformers.AutoModelForCausalLM.from_config(config).double().eval()
    with torch.no_grad():      # logits of several units, where tanh(u / 5) is far from linear
        model.get_output_embeddings().weight.mul_(40.0)
    return model


def autograd_error_vectors(model, batch, temperature):
    """Brute force: for every completion token k, the gradient of the actual model's log pi(y_k) at this
    temperature with respect to lm_head's weight, times the temperature: [B, T, V, d] (float64, 0 off mask)."""
    weight = model.get_output_embeddings().weight
    out = torch.zeros(*batch.mask.shape, *weight.shape, dtype=torch.float64)
    for row in range(batch.size):
        prompt_length, length = int(batch.prompt_lengths[row]), int(batch.mask[row].sum())
        ids = batch.input_ids[row, : prompt_length + length]
        for j in range(length):
            model.zero_grad(set_to_none=True)
            logps = torch.log_softmax(model(input_ids=ids[None]).logits[0] / temperature, dim=-1)
            logps[prompt_length + j - 1, ids[prompt_length + j]].backward()
            out[row, j] = weight.grad * temperature
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("kind", ["gemma2", "cohere", "granite"])
def test_nthr_scores_and_log_probs_follow_the_models_logit_transform(kind):
    """NTHR scores (every exact order, full vocabulary and V*, one process and in parts) equal the float64
    brute force sum_k <grad_W log pi(y_k), grad_W log pi(y_t)> of the actual model (chain rule through its
    logit transform), and the probabilities behind them sum to 1 over the vocabulary."""
    from lld_probe.core import LogitTransform, nthr_token_scores, positive_aggregate, scores_from_aggregate
    from lld_probe.core.interaction import log_normalizer, token_log_normalizer
    from lld_probe.scoring import logit_transform_of, output_embedding_weight
    model = tiny_transformed_model(kind)
    transform = logit_transform_of(model)
    assert transform == {"gemma2": LogitTransform(softcap=5.0), "cohere": LogitTransform(scale=0.5),
                         "granite": LogitTransform(scale=0.25)}[kind]
    temperature = 0.7
    prompts, completions = [[1, 2, 3]] * 4, [[9, 10, 11], [12, 9], [14, 15, 16], [17]]
    correct = torch.tensor([True, False, True, False])
    batch = build_group_batch(prompts, completions, pad_id=0)
    scored = score_group(model, batch, temperature=temperature, with_hidden=True)
    # the token log-probs are the log-softmax of the model's own (transformed) logits
    reference = torch.zeros_like(scored.token_logps)
    with torch.no_grad():
        for row in range(batch.size):
            ids = batch.input_ids[row, : 3 + len(completions[row])]
            logps = torch.log_softmax(model(input_ids=ids[None]).logits[0] / temperature, dim=-1)
            reference[row, : len(completions[row])] = logps[2:-1].gather(1, ids[3:, None])[:, 0]
    torch.testing.assert_close(scored.token_logps, reference, rtol=0, atol=1e-10)
    hidden, unembed, mask = scored.hidden, output_embedding_weight(model).detach(), batch.mask
    # pi sums to 1: the normaliser read from the log-probs equals the one summed over the vocabulary
    from_logps = token_log_normalizer(hidden[mask], batch.tokens[mask], unembed, temperature=temperature,
                                      token_logprobs=scored.token_logps[mask], transform=transform)
    torch.testing.assert_close(from_logps, log_normalizer(hidden[mask], unembed, temperature=temperature,
                                                          transform=transform), rtol=0, atol=1e-9)
    grads = autograd_error_vectors(model, batch, temperature)           # [B, T, V, d]
    source = mask & correct[:, None]
    for vocab in ("full", "group"):
        columns = torch.unique(batch.tokens[mask]) if vocab == "group" else torch.arange(unembed.shape[0])
        restricted = grads[:, :, columns].flatten(2)                    # rows of W in the columns only
        brute = torch.einsum("gtx,x->gt", restricted, restricted[source].sum(0)) * mask
        anchors = torch.stack([brute[i][mask[i]].mean() for i in range(4)])
        for method in ("outer", "pairwise"):
            for logprobs in (None, scored.token_logps):
                got = nthr_token_scores(hidden, unembed, batch.tokens, mask, correct, temperature=temperature,
                                        vocab=vocab, method=method, token_logprobs=logprobs, logit_transform=transform)
                torch.testing.assert_close(got.scores, brute, rtol=1e-9, atol=1e-9)
                torch.testing.assert_close(got.anchors[correct], anchors[correct], rtol=1e-9, atol=1e-9)
        cols = None if vocab == "full" else columns
        aggregate = sum(positive_aggregate(hidden[rows], unembed, batch.tokens[rows], mask[rows], correct[rows],
                                           columns=cols, temperature=temperature, logit_transform=transform)
                        for rows in (slice(0, 2), slice(2, 4)))
        parts = torch.cat([scores_from_aggregate(aggregate, hidden[rows], unembed, batch.tokens[rows], mask[rows],
                                                 columns=cols, temperature=temperature, logit_transform=transform)
                           for rows in (slice(0, 2), slice(2, 4))])
        torch.testing.assert_close(parts, brute, rtol=1e-9, atol=1e-9)
    # without the transform the kernel would be off: the test has teeth
    plain = nthr_token_scores(hidden, unembed, batch.tokens, mask, correct, temperature=temperature)
    assert float((plain.scores - brute).abs().max()) > 1e-3 * float(brute.abs().max())


def tiny_softcapped_gemma(tokenizer):
    """A tiny random Gemma-2 (cap 5, logits of several units: the cap bends them) on the tiny model's tokenizer,
    for a TRL run."""
    import transformers
    torch.manual_seed(0)
    config = transformers.Gemma2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                       final_logit_softcapping=5.0, pad_token_id=tokenizer.pad_token_id,
                                       eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)
    return model


@pytest.mark.integration
def test_the_trainer_scores_nthr_with_the_models_logit_transform(tmp_path):
    """LLDGRPOTrainer on a soft-capped Gemma-2: the recorder gets the model's transform, and its NTHR scores
    are the kernel's with that transform (not the plain W h form)."""
    import transformers

    from lld_probe.core import LogitTransform, nthr_token_scores
    from lld_probe.integrations.trl import LLDConfig, LLDGRPOTrainer
    from lld_probe.integrations.trl.run import build_dataset
    from lld_probe.models import load_model
    from lld_probe.tasks import get_task
    _, tokenizer = load_model("tiny")
    model = tiny_softcapped_gemma(tokenizer)
    task = get_task("arithmetic")
    args = LLDConfig(output_dir=str(tmp_path / "gemma"), method="nthr", num_generations=4,
                     per_device_train_batch_size=8, max_completion_length=6, max_steps=1, use_cpu=True, bf16=False,
                     report_to=[], save_strategy="no", disable_tqdm=True, probe_set_size=0, nthr_vocab="full")

    def alternate(prompts, completions, **kwargs):       # every group mixed: half of its responses correct
        return [float(i % 2) for i in range(len(completions))]

    trainer = LLDGRPOTrainer(model, [alternate], args, build_dataset(task, tokenizer, 8, seed=0),
                             processing_class=tokenizer)
    calls = []
    original = trainer.recorder.score_old_policy

    def spy(generation, token_logps, entropy, hidden, unembed, logit_transform=None):
        probed = original(generation, token_logps, entropy, hidden, unembed, logit_transform)
        calls.append((generation, token_logps, hidden, unembed.detach().float().clone(), logit_transform, probed))
        return probed

    trainer.recorder.score_old_policy = spy
    trainer.train()
    generation, token_logps, hidden, unembed, transform, probed = calls[0]
    assert transform == LogitTransform(softcap=5.0)
    batch, rows = generation.batch, slice(0, 4)
    expected = nthr_token_scores(hidden[rows].float(), unembed, batch.tokens[rows], batch.mask[rows],
                                 generation.correct[rows], temperature=trainer.temperature, vocab="full",
                                 token_logprobs=token_logps[rows].float().masked_fill(~batch.mask[rows], 0.0),
                                 logit_transform=LogitTransform(softcap=5.0))
    assert generation.correct[rows].any() and not generation.correct[rows].all()
    assert float(expected.scores.abs().max()) > 1e-3
    torch.testing.assert_close(probed.old.scores[rows], expected.scores, rtol=1e-4, atol=1e-5)


def test_logit_transforms_of_other_heads_and_a_head_with_a_bias_is_refused_before_training(tmp_path):
    import transformers

    from lld_probe.core import LogitTransform
    from lld_probe.integrations.trl import LLDConfig, LLDGRPOTrainer
    from lld_probe.integrations.trl.run import build_dataset, reward_function
    from lld_probe.models import load_model
    from lld_probe.scoring import logit_transform_of
    from lld_probe.tasks import get_task
    model, tokenizer = load_model("tiny")
    assert logit_transform_of(model) == LogitTransform() and LogitTransform().is_identity
    # MiniCPM3 divides the hidden states by logits_scaling before lm_head: the captured h already holds it
    minicpm = transformers.MiniCPM3Config(vocab_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32, dim_model_base=16, scale_depth=1.0)
    assert getattr(minicpm, "logits_scaling", None) not in (None, 1.0)
    assert logit_transform_of(transformers.AutoModelForCausalLM.from_config(minicpm)) == LogitTransform()
    # Falcon-H1 multiplies lm_head's output by lm_head_multiplier
    falcon = transformers.FalconH1Config(vocab_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=1, intermediate_size=32, mamba_d_ssm=32, mamba_n_heads=2,
                                         mamba_d_head=16, mamba_d_state=8, mamba_n_groups=1, lm_head_multiplier=0.25)
    assert logit_transform_of(transformers.AutoModelForCausalLM.from_config(falcon)) == LogitTransform(scale=0.25)
    head = model.lm_head
    model.lm_head = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with pytest.raises(ValueError, match="output layer has a bias"):
        logit_transform_of(model)
    task = get_task("arithmetic")
    config = LLDConfig(output_dir=str(tmp_path / "bias"), method="nthr", num_generations=4,
                       per_device_train_batch_size=8, max_completion_length=6, use_cpu=True, bf16=False,
                       report_to=[], save_strategy="no")
    with pytest.raises(ValueError, match="output layer has a bias"):
        LLDGRPOTrainer(model, [reward_function(task)], config, build_dataset(task, tokenizer, 8, seed=0),
                       processing_class=tokenizer)


@pytest.mark.integration
def test_the_trainer_scores_a_lora_model_packed(tmp_path):
    from peft import LoraConfig, get_peft_model

    from lld_probe.integrations.trl import LLDConfig, LLDGRPOTrainer
    from lld_probe.integrations.trl.run import build_dataset, reward_function
    from lld_probe.models import load_model
    from lld_probe.scoring.scoring import packing_verified
    from lld_probe.store.run_store import read_run_store
    from lld_probe.tasks import get_task
    model, tokenizer = load_model("tiny")
    torch.manual_seed(0)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    task = get_task("arithmetic")
    config = LLDConfig(output_dir=str(tmp_path / "lora"), method="nthr", num_generations=4,
                       per_device_train_batch_size=8, max_completion_length=6, max_steps=1, use_cpu=True,
                       bf16=False, report_to=[], save_strategy="no", disable_tqdm=True, probe_set_size=0)
    trainer = LLDGRPOTrainer(lora, [reward_function(task)], config, build_dataset(task, tokenizer, 8, seed=0),
                             processing_class=tokenizer)
    trainer.train()
    assert packing_verified(lora.get_base_model()) is True        # scored packed through the base model
    assert len(read_run_store(tmp_path / "lora").responses) == 8
