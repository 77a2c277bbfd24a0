"""The protocol's warmed optimizer state: a checkpoint's parameters and AdamW moments load exactly, and the
protocol's step from them is the step the saved optimizer itself would take."""

import copy
import re

import pytest
import torch

from lld_probe.models import load_model
from lld_probe.protocol import ProtocolConfig
from lld_probe.protocol.precision import ComputeCopy
from lld_probe.protocol.question import apply_update
from lld_probe.protocol.warm_state import WarmState


def _trainer_groups(model):
    """A Hugging Face Trainer's AdamW groups, written out independently: decay, then biases and norms."""
    no_decay = re.compile(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if not no_decay.search(n.lower())], "weight_decay": 0.01},
            {"params": [p for n, p in named if no_decay.search(n.lower())], "weight_decay": 0.0}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint-3 folder after three AdamW steps on random losses, and the optimizer that wrote it."""
    torch.manual_seed(0)
    model, _ = load_model("tiny")
    optimizer = torch.optim.AdamW(_trainer_groups(model), lr=1e-3, betas=(0.9, 0.99), eps=1e-7)
    tokens = torch.randint(0, model.config.vocab_size, (2, 12))
    for _ in range(3):
        optimizer.zero_grad()
        (model(tokens).logits.float() * torch.randn(2, 12, model.config.vocab_size)).mean().backward()
        optimizer.step()
    folder = tmp_path_factory.mktemp("run") / "checkpoint-3"
    model.save_pretrained(folder)
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    return folder, model, optimizer


def test_warm_state_loads_parameters_and_moments_exactly(checkpoint):
    folder, trained, saved_optimizer = checkpoint
    model, _ = load_model("tiny")                                  # the untrained parameters
    state = WarmState.load(folder.parent, model)                   # the run folder: its last checkpoint
    state.load_parameters(model)
    assert state.checkpoint == folder and state.steps == 3
    for (name, ours), theirs in zip(model.state_dict().items(), trained.state_dict().values()):
        assert torch.equal(ours, theirs), name
    optimizer = state.optimizer(lr=5e-4)
    by_parameter = dict(zip(trained.parameters(), model.parameters()))
    for group, saved_group in zip(optimizer.param_groups, saved_optimizer.param_groups):
        assert group["lr"] == 5e-4 and group["betas"] == (0.9, 0.99) and group["eps"] == 1e-7
        assert group["weight_decay"] == saved_group["weight_decay"]
    for parameter, moments in saved_optimizer.state.items():
        ours = optimizer.state[by_parameter[parameter]]
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(ours[key], moments[key]), key


def test_protocol_step_from_warm_state_is_the_saved_optimizers_next_step(checkpoint):
    folder, trained, saved_optimizer = checkpoint
    model, _ = load_model("tiny")
    state = WarmState.load(folder, model)
    state.load_parameters(model)
    base_state = {name: value.clone() for name, value in model.state_dict().items()}
    torch.manual_seed(1)
    gradients = [torch.randn_like(p) for p in model.parameters()]
    config = ProtocolConfig(model="tiny", optimizer="adamw", lr=1e-3)
    for _ in range(2):                   # twice: the saved moments are not changed by a step
        apply_update(model, ComputeCopy(model), base_state, gradients, config, state)
    reference_model = copy.deepcopy(trained)
    reference = torch.optim.AdamW(_trainer_groups(reference_model), lr=1e-3)
    reference.load_state_dict(copy.deepcopy(saved_optimizer.state_dict()))
    for parameter, gradient in zip(reference_model.parameters(), gradients):
        parameter.grad = gradient.clone()
    reference.step()
    for ours, theirs in zip(model.parameters(), reference_model.parameters()):
        assert torch.equal(ours, theirs)


def test_optimizer_state_settings_are_checked(tmp_path, checkpoint):
    folder, _, _ = checkpoint
    with pytest.raises(ValueError, match="needs optimizer adamw"):
        ProtocolConfig(optimizer="sgd", optimizer_state=str(folder)).resolved()
    with pytest.raises(ValueError, match="warm needs optimizer_state"):
        ProtocolConfig(optimizer="adamw", optimizer_moments="warm").resolved()
    with pytest.raises(FileNotFoundError, match="checkpoint-N"):
        ProtocolConfig(optimizer="adamw", optimizer_state=str(tmp_path)).resolved()
    resolved = ProtocolConfig(optimizer="adamw", optimizer_state=str(folder.parent)).resolved()
    assert resolved.optimizer_state == str(folder) and resolved.optimizer_moments == "warm" and resolved.lr == 1e-3
