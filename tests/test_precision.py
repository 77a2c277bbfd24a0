"""The probes' log-likelihoods are float32 under mixed-precision training: TRL's bf16=True (accelerate's autocast
wrapper of the model's forward), an autocast context, the packing self-check; and a stated resolution where
the weights themselves are bf16."""

from __future__ import annotations

import warnings

import pytest
import torch

from lld_probe.models import load_model
from lld_probe.scoring import build_group_batch, score_group
from lld_probe.scoring.precision import float32_forwards, probe_precision
from lld_probe.scoring.scoring import packing_verified
from lld_probe.store.run_store import read_run_store
from lld_probe.integrations.trl.run import run_training
from helpers import train_settings


def _float32_sequence_logps(model, prompts, completions, temperature=1.0) -> list[float]:
    """Independent float32 reference: each full row alone through the plain model, no autocast; the state at
    t-1 predicts token t."""
    values = []
    with torch.no_grad():
        for prompt, completion in zip(prompts, completions):
            ids = torch.tensor([prompt + completion])
            logits = model(input_ids=ids).logits[0].float() / temperature
            predicting = logits[len(prompt) - 1: len(prompt) + len(completion) - 1]     # predict completion[j]
            logps = torch.log_softmax(predicting, dim=-1)[torch.arange(len(completion)), torch.tensor(completion)]
            values.append(float(logps.double().sum()))
    return values


def _rows(batch):
    prompts = [batch.input_ids[r, : int(batch.prompt_lengths[r])].tolist() for r in range(batch.size)]
    completions = [batch.tokens[r, : int(batch.mask[r].sum())].tolist() for r in range(batch.size)]
    return prompts, completions


def _fresh_tiny():
    model, tokenizer = load_model("tiny")
    return model, tokenizer


def _group(tokenizer, rows=4):
    prompt = tokenizer("What is 12 + 30?")["input_ids"]
    generator = torch.Generator().manual_seed(0)
    completions = [torch.randint(5, 60, (int(n),), generator=generator).tolist() for n in (9, 14, 6, 12)[:rows]]
    return build_group_batch([prompt] * rows, completions, pad_id=0)


@pytest.mark.integration
def test_trl_bf16_run_stores_float32_log_likelihoods(tmp_path):
    model, tokenizer = _fresh_tiny()
    initial = {name: value.detach().clone() for name, value in model.state_dict().items()}
    settings = train_settings(out=str(tmp_path / "run"), method="grpo", steps=1, prompts_per_step=2, group_size=4,
                              eval_every=0, probe_set_size=0, progress=False, bf16=True)
    trainer = run_training(settings, model=model, tokenizer=tokenizer)
    assert trainer.accelerator.mixed_precision == "bf16"         # the training forward ran under bf16 autocast
    assert "_original_forward" in trainer.model.__dict__          # accelerate's wrapper is on the model, and stays
    store = read_run_store(tmp_path / "run")
    assert store.meta["probe_precision"] == "float32" and store.meta["training_precision"] == "bf16 autocast"
    assert store.meta["old_policy_source"] == "separate_forward"
    assert "not the float32 numbers the probes report" in store.meta["old_policy_source_reason"]
    batch = trainer.last_probed.batch
    prompts, completions = _rows(batch)
    stored = store.responses[store.responses["step"] == 1].reset_index(drop=True)
    reference, _ = load_model("tiny")
    reference.load_state_dict(initial)
    before = _float32_sequence_logps(reference, prompts, completions, trainer.temperature)
    reference.load_state_dict(trainer.model.state_dict())
    after = _float32_sequence_logps(reference, prompts, completions, trainer.temperature)
    assert max(abs(a - b) for a, b in zip(before, after)) > 1e-3          # the update changed the numbers
    assert stored["logp_before"].tolist() == pytest.approx(before, abs=2e-5)
    assert stored["logp_after"].tolist() == pytest.approx(after, abs=2e-5)
    assert "delta_resolution" not in " ".join(store.scalars["name"].unique())     # float32 weights: exact


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state: a test with its own mixed precision starts and ends clean."""
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _accelerate_bf16(model):
    """The model as TRL's bf16=True leaves it: accelerate's autocast wrapper on its forward."""
    from accelerate import Accelerator
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    prepared = accelerator.prepare_model(model)
    assert accelerator.native_amp and "_original_forward" in prepared.__dict__
    return prepared


def test_scoring_under_accelerate_autocast_is_float32_and_the_wrapper_stays(fresh_accelerate_state):
    model, tokenizer = _fresh_tiny()
    batch = _group(tokenizer)
    reference = _float32_sequence_logps(model, *_rows(batch))
    wrapped = _accelerate_bf16(model)
    wrapper = wrapped.forward
    with torch.no_grad():      # the wrapper computes in bf16: what scoring would see without float32_forwards
        row = wrapped(input_ids=torch.tensor([_rows(batch)[0][0] + _rows(batch)[1][0]])).logits
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # the packing self-check passes (no fallback warning)
        scored = score_group(wrapped, batch)
    assert packing_verified(wrapped) is True
    sums = (scored.token_logps.double() * batch.mask).sum(1).tolist()
    assert sums == pytest.approx(reference, abs=2e-5)
    assert wrapped.forward == wrapper               # the training forward keeps its autocast
    with torch.no_grad(), float32_forwards(wrapped):
        plain = wrapped(input_ids=torch.tensor([_rows(batch)[0][0] + _rows(batch)[1][0]])).logits
    assert float((plain - row).abs().max()) > 1e-3            # the wrapper really is low precision


def test_packing_check_passes_inside_an_autocast_context():
    model, tokenizer = _fresh_tiny()
    batch = _group(tokenizer)
    reference = _float32_sequence_logps(model, *_rows(batch))
    with warnings.catch_warnings(), torch.autocast("cpu", dtype=torch.bfloat16):
        warnings.simplefilter("error")
        scored = score_group(model, batch)
    assert packing_verified(model) is True
    assert (scored.token_logps.double() * batch.mask).sum(1).tolist() == pytest.approx(reference, abs=2e-5)


def test_packing_check_compares_like_with_like_under_an_explicit_autocast_dtype():
    """forward_logps with autocast_dtype (gradient forwards): the check runs both layouts in that dtype."""
    from lld_probe.scoring import forward_logps
    model, tokenizer = _fresh_tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forward_logps(model, _group(tokenizer), autocast_dtype=torch.bfloat16)
    assert packing_verified(model) is True


def test_float32_forwards_use_full_precision_matmuls_and_put_the_setting_back():
    """TF32 (torch.set_float32_matmul_precision("high"), the Trainer's tf32=True) rounds float32 matmuls to a
    10-bit mantissa: the probes' forwards run at "highest" and leave the training's setting as it was."""
    model, _ = _fresh_tiny()
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        seen = []
        handle = model.register_forward_pre_hook(lambda module, args: seen.append(torch.get_float32_matmul_precision()))
        with torch.no_grad(), float32_forwards(model):
            model(input_ids=torch.tensor([[1, 2, 3]]))
        handle.remove()
        assert seen == ["highest"] and torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_flash_attention_gives_way_to_sdpa_for_float32_forwards_only(monkeypatch):
    """flash-attention kernels take bf16/fp16 only: with float32 weights the probes' float32 forwards run sdpa
    (the same numbers as a plain sdpa model), and the model gets its flash-attention back after the block;
    bf16 weights keep it. (No flash-attention on this CPU: transformers' availability check is bypassed, and
    no forward runs with flash-attention.)"""
    import transformers
    check = transformers.PreTrainedModel._check_and_adjust_attn_implementation

    def flash_without_the_package(self, implementation, *args, **kwargs):
        return implementation if "flash" in str(implementation) else check(self, implementation, *args, **kwargs)

    monkeypatch.setattr(transformers.PreTrainedModel, "_check_and_adjust_attn_implementation",
                        flash_without_the_package)
    model, tokenizer = _fresh_tiny()
    batch = _group(tokenizer)
    reference = score_group(model, batch).token_logps
    model.set_attn_implementation("flash_attention_2")
    assert model.config._attn_implementation == "flash_attention_2"
    seen = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append(module.config._attn_implementation))
    scored = score_group(model, batch)
    handle.remove()
    assert set(seen) == {"sdpa"} and model.config._attn_implementation == "flash_attention_2"
    assert model.model.config._attn_implementation == "flash_attention_2"
    torch.testing.assert_close(scored.token_logps, reference, rtol=0, atol=1e-5)
    low = model.to(torch.bfloat16)
    with float32_forwards(low):
        assert low.config._attn_implementation == "flash_attention_2"


def test_probe_precision_names_low_precision_weights():
    model, _ = _fresh_tiny()
    assert probe_precision(model) == "float32"
    assert probe_precision(model.to(torch.bfloat16)) == "bfloat16 weights"
    # a quantized model (transformers sets hf_quantizer; its 4-bit weights are uint8, not floating point)
    from lld_probe.scoring.precision import low_precision_weights
    model, _ = _fresh_tiny()
    model.hf_quantizer, model.config.quantization_config = object(), {"quant_method": "bitsandbytes"}
    assert probe_precision(model) == "bitsandbytes quantized weights" and low_precision_weights(model)


@pytest.mark.integration
@pytest.mark.parametrize("autocast", [False, True])       # bf16 weights under bf16=True too (as DeepSpeed's bf16)
def test_bf16_weights_are_labelled_and_each_step_records_the_resolution_of_delta(tmp_path, autocast):
    from lld_probe.analysis.report import write_report
    model, tokenizer = load_model("tiny", dtype=torch.bfloat16)
    settings = train_settings(out=str(tmp_path / "run"), method="grpo", steps=2, prompts_per_step=2, group_size=4,
                              eval_every=0, probe_set_size=0, progress=False, bf16=autocast)
    trainer = run_training(settings, model=model, tokenizer=tokenizer)
    store = read_run_store(tmp_path / "run")
    assert store.meta["probe_precision"] == "bfloat16 weights"
    assert store.meta["training_precision"] == "bfloat16 weights"
    resolution = store.scalars[store.scalars["name"] == "lld/delta_resolution"]
    assert sorted(resolution["step"]) == [1, 2]
    assert ((resolution["value"] > 0) & (resolution["value"] < 5)).all()     # bf16 rounding, measured
    summary = write_report([tmp_path / "run"], tmp_path / "report").read_text()
    assert "bfloat16 weights" in summary and "resolution of Delta" in summary
    assert trainer.last_probed.batch.size == 8


@pytest.mark.parametrize("quick", [True, False])
def test_the_demo_runs_every_stage_in_float32(monkeypatch, tmp_path, quick):
    """Every stage of the demo trains and scores in float32 whatever the machine, so its numbers do not depend
    on a CPU's bf16 instructions (the demo used to pick bf16 where they were present)."""
    import types

    import pandas as pd

    import lld_probe.analysis.report as report
    import lld_probe.integrations.trl.run as run
    import lld_probe.models as models
    import lld_probe.protocol as protocol
    from lld_probe.demo import run_demo

    stages = []
    monkeypatch.setattr(models, "load_model", lambda name, **kw: (None, None))
    monkeypatch.setattr(protocol, "run_protocol", lambda config, **kw: stages.append(config) or
                        types.SimpleNamespace(questions=pd.DataFrame({"mixed": [False]})))
    monkeypatch.setattr(protocol, "save_protocol", lambda result, folder: None)
    monkeypatch.setattr(run, "run_training", lambda settings, **kw: stages.append(settings))
    monkeypatch.setattr(report, "write_report", lambda runs, out: out / "summary.md")
    run_demo(quick=quick, out=tmp_path / "demo")
    assert stages and not any(stage.bf16 for stage in stages)


def test_trl_loss_forward_runs_under_autocast():
    """Why a bf16 run scores the old policy in a separate float32 forward: TRL's loss forward is autocast."""
    import inspect

    from trl import GRPOTrainer
    source = inspect.getsource(GRPOTrainer._get_per_token_logps_and_entropies)
    assert "self.accelerator.autocast()" in source, (
        "TRL's _get_per_token_logps_and_entropies no longer runs under accelerator.autocast(): check whether its "
        "log-probs are float32 under bf16=True, and if so let decide_old_policy_source reuse it")
