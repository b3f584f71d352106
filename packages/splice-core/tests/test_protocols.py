"""The optional-capability protocols: what the Trainer finds by type, and the conformance
checks in ``splice.testing.protocols`` passing good components and catching planted faults."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import torch
from splice.data.tasks import JsonlTask, JsonlTaskConfig
from splice.data.tokenizer import CharTokenizer
from splice.interfaces import (
    AfterOptimizerStep,
    ClosedAlphabet,
    HasTrainableModules,
    LocatedTask,
    Minibatched,
    ParamLRScaled,
    RolloutFactory,
    SetsUp,
    Stateful,
)
from splice.testing.protocols import (
    ProtocolViolation,
    check_after_optimizer_step,
    check_closed_alphabet,
    check_located_task,
    check_minibatches,
    check_param_lr_scaled,
    check_rollout_factory,
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
    assert isinstance(CharTokenizer(), ClosedAlphabet) and not isinstance(object(), ClosedAlphabet)
    assert isinstance(JsonlTask(JsonlTaskConfig(train="x.jsonl")), LocatedTask)


def jsonl_task(tmp_path, n=40, **config):
    rows = [f'{{"prompt": "{i}+1=", "completion": "{i + 1}"}}' for i in range(n)]
    (tmp_path / "d.jsonl").write_text("\n".join(rows) + "\n")
    return JsonlTask(JsonlTaskConfig(train=str(tmp_path / "d.jsonl"), **config))


def test_located_task_names_every_example_and_catches_one_it_leaves_out(tmp_path):
    task = jsonl_task(tmp_path, held_out_fraction=0.25)
    pairs = check_located_task(task)
    assert [w for w, _ in pairs][:2] == [f"{tmp_path / 'd.jsonl'}:1", f"{tmp_path / 'd.jsonl'}:2"]

    class SkipsTheLast(JsonlTask):
        def lines(self):  # planted: the last line is never checked before step 1
            return list(super().lines())[:-1]

    leaky = SkipsTheLast(task.config)
    with pytest.raises(ProtocolViolation, match=r"leaves out 1 (train|held_out) example"):
        check_located_task(leaky)


def test_closed_alphabet_must_refuse_characters_outside_it():
    check_closed_alphabet(CharTokenizer("abc+="))

    class Lenient(CharTokenizer):
        def encode(self, text, *, bos=False, eos=False):  # planted: drops what it lacks
            return super().encode("".join(c for c in text if c in self.alphabet), bos=bos, eos=eos)

    with pytest.raises(ProtocolViolation, match="did not raise ValueError"):
        check_closed_alphabet(Lenient("abc"))

    class Shifted(CharTokenizer):
        def decode(self, ids, *, skip_special=True):  # planted: off by one
            return super().decode([i + 1 for i in ids], skip_special=skip_special)

    with pytest.raises(ProtocolViolation, match="encodes and decodes to"):
        check_closed_alphabet(Shifted("abc"))


@pytest.mark.mha
def test_rollout_factory_samples_the_same_tokens_for_the_same_step():
    from splice.generation.sampling import SamplingConfig
    from splice.models.build import build_model
    from splice.models.configs import DecoderConfig
    from splice.rl.rollout import Rollouts

    tok = CharTokenizer()
    torch.manual_seed(0)
    model = build_model(
        DecoderConfig.model_validate(
            {
                "type": "decoder",
                "vocab_size": tok.vocab_size,
                "d_model": 16,
                "n_layers": 1,
                "max_seq_len": 16,
                "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
            }
        )
    )
    sampling = SamplingConfig(max_new_tokens=6, temperature=1.0)
    prompts = [tok.encode("1+2=", bos=True), tok.encode("3+4=", bos=True)]
    rollouts = Rollouts(sampling, tok, seed=3, prompts_per_step=2)
    assert isinstance(rollouts, RolloutFactory)
    check_rollout_factory(rollouts, model, prompts)

    class Reseeding(Rollouts):
        calls = 0

        def generator(self, step, first_index=0):  # planted: a fresh seed on every call
            Reseeding.calls += 1
            return super().generator(step * 1000 + Reseeding.calls, first_index)

    with pytest.raises(ProtocolViolation, match="sampled different tokens"):
        check_rollout_factory(Reseeding(sampling, tok, seed=3), model, prompts)


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
    classes = [c for c in tree.body if isinstance(c, ast.ClassDef)]
    protocols = [c for c in classes if any(ast.unparse(b) == "Protocol" for b in c.bases)]
    names = {
        n.name
        for cls in classes
        for n in cls.body
        if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")
    } | {  # a protocol's attributes are part of its interface too
        n.target.id
        for cls in protocols
        for n in cls.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }
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
    expected = {"setup", "minibatches", "state_dict", "after_optimizer_step", "lines"}
    assert expected | {"param_lr_scale", "alphabet", "prompts_per_step"} <= names
    assert probes == []
