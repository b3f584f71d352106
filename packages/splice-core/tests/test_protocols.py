"""The optional-capability protocols: what the Trainer finds by type, and the conformance
checks in ``splice.testing.protocols`` passing good components and catching planted faults."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import torch
from splice.data.tasks import JsonlTask, JsonlTaskConfig
from splice.interfaces import (
    AfterOptimizerStep,
    HasTrainableModules,
    Minibatched,
    ParamLRScaled,
    SetsUp,
    Stateful,
)
from splice.testing.protocols import (
    ProtocolViolation,
    check_after_optimizer_step,
    check_minibatches,
    check_param_lr_scaled,
    check_sets_up,
    check_split_task,
    check_stateful,
    check_trainable_modules,
)
from splice.training.configs import OptimizerConfig
from splice.training.optimizer import build_optimizer
from torch import nn


class Snapshot:
    def __init__(self, *, corrupt: bool = False) -> None:
        self.corrupt, self.ref = corrupt, None

    def setup(self, model, data=None):
        self.ref = copy.deepcopy(model)
        if self.corrupt:  # planted: re-initialises the model it should only copy
            with torch.no_grad():
                next(model.parameters()).add_(1.0)


class Coefficient:
    def __init__(self, *, lossy: bool = False) -> None:
        self.beta, self.buf, self.lossy = 0.1, torch.arange(3.0), lossy

    def state_dict(self):
        return {"beta": self.beta, "buf": self.buf}

    def load_state_dict(self, state):
        self.beta = state["beta"] if not self.lossy else 0.0  # planted: forgets beta
        self.buf = state["buf"]


class ScaledLinear(nn.Linear):
    def __init__(self, scale: dict[str, float]) -> None:
        super().__init__(3, 2)
        self.param_lr_scale = scale


class Counter(nn.Linear):
    def __init__(self, *, leak: bool = False) -> None:
        super().__init__(2, 2)
        self.leak, self.count = leak, torch.zeros(())

    def after_optimizer_step(self):
        self.count += 1
        if self.leak:  # planted: a metric that keeps the graph alive
            return {"w": self.weight.sum()}
        return {"count": self.count.clone()}


class WithHead:
    def __init__(self, *, frozen: bool = False) -> None:
        self.head = nn.Linear(2, 1)
        self.head.requires_grad_(not frozen)

    def trainable_modules(self):
        return {"value_head": self.head}


class Splits:
    def __init__(self, *, flaky: bool = False) -> None:
        self.flaky, self.calls = flaky, 0

    def minibatches(self, experience):
        self.calls += 1
        n = 2 if not self.flaky or self.calls == 1 else 3  # planted: differs per call
        return [experience] * n


def test_protocols_are_found_by_type_not_by_name():
    assert isinstance(Snapshot(), SetsUp) and isinstance(Coefficient(), Stateful)
    assert isinstance(ScaledLinear({}), ParamLRScaled)
    assert isinstance(Counter(), AfterOptimizerStep) and not isinstance(
        nn.Linear(2, 2), AfterOptimizerStep
    )
    assert isinstance(WithHead(), HasTrainableModules) and isinstance(Splits(), Minibatched)


def test_sets_up_passes_a_copy_and_catches_a_setup_that_changes_the_model():
    check_sets_up(Snapshot(), nn.Linear(2, 2))
    with pytest.raises(ProtocolViolation, match=r"Snapshot\.setup changed the model's 'weight'"):
        check_sets_up(Snapshot(corrupt=True), nn.Linear(2, 2))


def test_stateful_round_trip_and_a_load_that_forgets():
    check_stateful(Coefficient())
    with pytest.raises(ProtocolViolation, match="did not restore 'beta'"):
        check_stateful(Coefficient(lossy=True))

    class Opaque(Coefficient):
        def state_dict(self):
            return {"rng": object()}

    with pytest.raises(ProtocolViolation, match="neither a tensor nor JSON-able"):
        check_stateful(Opaque())


def test_param_lr_scale_names_own_parameters_and_the_optimizer_uses_it():
    layer = ScaledLinear({"bias": 4.0})
    check_param_lr_scaled(layer)
    opt = build_optimizer(layer, OptimizerConfig(lr=1e-2))
    scaled = [g for g in opt.param_groups if g.get("lr_scale")]
    assert [(g["lr_scale"], [p is layer.bias for p in g["params"]]) for g in scaled] == [
        (4.0, [True])
    ]
    with pytest.raises(ProtocolViolation, match="names 'lora_B'"):
        check_param_lr_scaled(ScaledLinear({"lora_B": 2.0}))
    with pytest.raises(ProtocolViolation, match="expected a positive number"):
        check_param_lr_scaled(ScaledLinear({"weight": 0.0}))


def test_after_optimizer_step_metrics_and_a_leaking_one():
    assert float(check_after_optimizer_step(Counter())["count"]) == 1.0
    with pytest.raises(ProtocolViolation, match="without grad"):
        check_after_optimizer_step(Counter(leak=True))


def test_trainable_modules_need_trainable_parameters():
    assert list(check_trainable_modules(WithHead())) == ["value_head"]
    with pytest.raises(ProtocolViolation, match="has no trainable parameter"):
        check_trainable_modules(WithHead(frozen=True))


def test_minibatches_must_be_the_same_number_every_time():
    assert len(check_minibatches(Splits(), {"x": torch.ones(2)})) == 2
    with pytest.raises(ProtocolViolation, match="gave 2 then 3"):
        check_minibatches(Splits(flaky=True), {"x": torch.ones(2)})


def test_split_task_train_and_held_out_are_disjoint(tmp_path):
    rows = [f'{{"prompt": "{i}+1=", "completion": "{i + 1}"}}' for i in range(40)]
    (tmp_path / "d.jsonl").write_text("\n".join(rows) + "\n")
    task = JsonlTask(JsonlTaskConfig(train=str(tmp_path / "d.jsonl"), held_out_fraction=0.25))
    train, held = check_split_task(task)
    assert len(train) + len(held) == 40 and held

    class Leaky:
        def split(self, split):
            return list(range(10)) if split == "train" else [3]

    with pytest.raises(ProtocolViolation, match="also in the training split"):
        check_split_task(Leaky())


def test_no_getattr_probe_for_an_interface_method_in_training():
    """``splice/training`` finds optional capabilities by type, never by name."""
    import splice.interfaces as interfaces

    tree = ast.parse(Path(interfaces.__file__).read_text())
    names = {
        n.name
        for cls in tree.body
        if isinstance(cls, ast.ClassDef)
        for n in cls.body
        if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")
    } | {"param_lr_scale"}
    training = Path(interfaces.__file__).parent / "training"
    probes = []
    for path in sorted(training.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in names
            ):
                probes.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert {"setup", "minibatches", "state_dict", "after_optimizer_step"} <= names
    assert probes == []
