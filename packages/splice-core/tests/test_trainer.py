"""Trainer: optimizer/schedule, accumulation, frozen params, determinism, logs and artefacts."""

from __future__ import annotations

import json
import math

import pytest
import torch
from splice.interfaces import LossOutput
from splice.training.configs import OptimizerConfig, ScheduleConfig, TrainConfig
from splice.training.schedule import lr_multiplier
from splice.training.stream import ListBatches, TaskBatches, derive_seed
from splice.training.trainer import NonFiniteLossError, Trainer, build_optimizer
from torch import nn

pytestmark = pytest.mark.bf16_pass  # also run with bf16 forced (nox -s tests_bf16)


class Regression:
    """Toy objective: mean squared error of ``model(x)`` against ``y``."""

    def loss(self, model, batch):
        err = model(batch["x"]) - batch["y"]
        return LossOutput(loss=(err**2).mean(), metrics={"abs_err": err.abs().mean().detach()})


def make_batches(n=64, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    return ListBatches(
        list(zip(x, y)),
        lambda items: {
            "x": torch.stack([a for a, _ in items]),
            "y": torch.stack([b for _, b in items]),
        },
        batch_size=batch,
        seed=seed,
    )


def quiet(**kw):
    return TrainConfig(progress=False, log_every=5, **kw)


def test_trainer_fits_a_linear_map_and_writes_artefacts(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    cfg = quiet(
        steps=200,
        batch_size=8,
        optimizer=OptimizerConfig(lr=0.05),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=10),
    )
    evals = []

    def evaluator(m):
        evals.append(m.training)
        return {"weight_err": float((m.weight - torch.tensor([[1.0, -2.0, 0.5, 3.0]])).abs().max())}

    out = Trainer(
        model,
        Regression(),
        make_batches(),
        cfg,
        run_dir=tmp_path,
        evaluator=evaluator,
        eval_every=100,
    ).fit()
    assert out["final_train_loss"] < 1e-3
    assert out["eval"]["weight_err"] < 0.05
    assert evals == [False, False]  # at step 100 and 200 (not twice at the end), in eval mode
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 201))  # one line per step
    assert {"loss", "lr", "grad_norm", "tokens", "abs_err", "elapsed_s"} <= set(train[0])
    assert [r["step"] for r in lines if r["kind"] == "eval"] == [100, 200]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    report = (tmp_path / "report.md").read_text()
    assert "weight_err" in report and "curves.png" in report
    assert (tmp_path / "checkpoints" / "step-000200" / "model.safetensors").is_file()


def test_lr_schedules():
    s = ScheduleConfig(kind="linear", warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_multiplier(i, 10, s) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_multiplier(9, 10, s) == pytest.approx(0.1)
    c = ScheduleConfig(kind="cosine", warmup_steps=0)
    assert lr_multiplier(0, 11, c) == 1.0
    assert lr_multiplier(5, 11, c) == pytest.approx(0.5)
    assert lr_multiplier(10, 11, c) == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier(1000, 11, ScheduleConfig()) == 1.0


def test_lr_is_applied_per_step(tmp_path):
    cfg = quiet(
        steps=10,
        optimizer=OptimizerConfig(lr=0.1),
        schedule=ScheduleConfig(kind="linear", warmup_steps=2),
    )
    Trainer(nn.Linear(4, 1), Regression(), make_batches(), cfg, run_dir=tmp_path).fit()
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lrs[:3] == pytest.approx([0.05, 0.1, 0.1])
    assert lrs[-1] == pytest.approx(0.0)


def test_frozen_parameters_get_no_optimizer_state():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    model[0].requires_grad_(False)
    frozen_before = model[0].weight.clone()
    trainer = Trainer(model, Regression(), make_batches(), quiet(steps=3))
    trainer.fit()
    state_params = {id(p) for p in trainer.optimizer.state}
    assert state_params == {id(model[1].weight), id(model[1].bias)}
    assert torch.equal(model[0].weight, frozen_before)


def test_weight_decay_only_on_matrices():
    opt = build_optimizer(nn.Linear(4, 3), OptimizerConfig(weight_decay=0.1))
    assert [(g["weight_decay"], [p.ndim for p in g["params"]]) for g in opt.param_groups] == [
        (0.1, [2]),
        (0.0, [1]),
    ]


@pytest.mark.mha
def test_gradient_accumulation_matches_a_big_batch():
    """2 micro-batches of 8 = 1 batch of 16 (equal-size micro-batches, mean loss)."""

    def run(batch, accum):
        torch.manual_seed(0)
        model = nn.Linear(4, 1)
        cfg = quiet(
            steps=5,
            precision="float32",  # exact arithmetic: bf16 rounds each split differently
            batch_size=batch,
            grad_accum=accum,
            optimizer=OptimizerConfig(name="sgd", lr=0.1),
        )
        Trainer(model, Regression(), make_batches(batch=batch), cfg).fit()
        return model.weight.detach()

    torch.testing.assert_close(run(16, 1), run(8, 2), rtol=1e-6, atol=1e-6)


class MaskedRegression:
    """Mean squared error over the rows a batch marks as real: a token-mean loss."""

    def loss(self, model, batch):
        keep = batch["keep"]
        err = (model(batch["x"]) - batch["y"]).squeeze(-1) ** 2
        n = int(keep.sum())
        return LossOutput(loss=(err * keep).sum() / n, metrics={"tokens": float(n)}, n_tokens=n)


def _masked_batches(valid_counts, rows=8, seed=0):
    """One batch per count: ``rows`` rows, the first ``count`` of them real."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for count in valid_counts:
        x = torch.randn(rows, 4, generator=g)
        y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(
            rows, 1, generator=g
        )
        keep = (torch.arange(rows) < count).float()
        out.append({"x": x, "y": y, "keep": keep})
    return out


def _concat(batches):
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


@pytest.mark.parametrize(
    "optimizer, clip",
    [
        (OptimizerConfig(name="sgd", lr=0.1), None),
        (OptimizerConfig(lr=0.05, fused=True), 0.5),  # clipping folded into grad_scale
        (OptimizerConfig(lr=0.05, fused=True), None),  # the division alone as grad_scale
        (OptimizerConfig(lr=0.05, fused=False), 0.5),  # divided and clipped in place
    ],
    ids=["sgd", "fused adamw + clip", "fused adamw", "adamw + clip"],
)
@pytest.mark.mha
def test_accumulation_weighs_micro_batches_by_their_tokens(optimizer, clip):
    """Micro-batches with 2 and 7 real rows train exactly like one batch of the 16 rows."""
    micro = _masked_batches([2, 7, 5, 1, 8, 3])  # three steps of two micro-batches

    def run(batches, accum):
        torch.manual_seed(0)
        model = nn.Linear(4, 1)
        cfg = quiet(
            steps=3,
            batch_size=8,
            grad_accum=accum,
            optimizer=optimizer,
            max_grad_norm=clip,
            precision="float32",  # exact arithmetic: bf16 rounds each split differently
        )
        trainer = Trainer(model, MaskedRegression(), batches, cfg)
        trainer.fit()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    accumulated = run(micro, 2)
    big = run([_concat(micro[i : i + 2]) for i in range(0, 6, 2)], 1)
    torch.testing.assert_close(accumulated, big, rtol=1e-6, atol=1e-6)


def test_equal_weighting_of_unequal_micro_batches_would_differ():
    """The check above can fail: the mean of the micro-batch means is a different gradient."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    a, b = _masked_batches([2, 7])
    objective = MaskedRegression()
    mean_of_means = (objective.loss(model, a).loss + objective.loss(model, b).loss) / 2
    token_mean = objective.loss(model, _concat([a, b])).loss
    (g_means,) = torch.autograd.grad(mean_of_means, model.weight)
    (g_tokens,) = torch.autograd.grad(token_mean, model.weight)
    assert (g_means - g_tokens).abs().max() > 1e-2


@pytest.mark.mha
def test_accumulated_step_logs_the_token_weighted_loss(tmp_path):
    micro = _masked_batches([2, 7])
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    expected = float(MaskedRegression().loss(model, _concat(micro)).loss.detach())
    cfg = quiet(
        steps=1,
        batch_size=8,
        grad_accum=2,
        optimizer=OptimizerConfig(name="sgd", lr=0.1),
        precision="float32",  # the logged loss is checked to float32 tolerance
    )
    Trainer(model, MaskedRegression(), micro, cfg, run_dir=tmp_path).fit()
    (record,) = [
        json.loads(line)
        for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "train"
    ]
    assert record["loss"] == pytest.approx(expected, rel=1e-6)
    assert record["tokens"] == 9  # the objective's count, summed over micro-batches


def test_training_is_deterministic():
    def run():
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.2), nn.Linear(16, 1))
        Trainer(model, Regression(), make_batches(), quiet(steps=20), seed=3).fit()
        return torch.cat([p.flatten() for p in model.parameters()])

    assert torch.equal(run(), run())


def test_regularizer_penalty_is_added_and_set_up_first():
    class Pull:
        def setup(self, model, data):
            self.start = [p.detach().clone() for p in model.parameters()]
            self.data = data

        def penalty(self, model, batch):
            return 100.0 * sum(((p - s) ** 2).sum() for p, s in zip(model.parameters(), self.start))

    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    start = model.weight.detach().clone()
    reg = Pull()
    out = Trainer(
        model,
        Regression(),
        make_batches(),
        quiet(steps=30),
        regularizers=[reg],
        regularizer_data=["marker"],
    ).fit()
    assert reg.data == ["marker"]
    # The strong pull keeps weights near the start, far from the regression solution.
    assert (model.weight - start).abs().max() < 0.1
    assert out["final_train_loss"] > 1.0


def test_non_finite_loss_names_the_step(tmp_path):
    class Explodes(Regression):
        calls = 0

        def loss(self, model, batch):
            Explodes.calls += 1
            out = super().loss(model, batch)
            if Explodes.calls == 13:
                out.loss = out.loss * math.inf
            return out

    cfg = quiet(steps=30, checkpoint_every=5)
    with pytest.raises(NonFiniteLossError, match=r"step 13.*step-000010"):
        Trainer(nn.Linear(4, 1), Explodes(), make_batches(), cfg, run_dir=tmp_path).fit()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-000005",
        "step-000010",
    ]


def test_batch_streams_restart_at_any_position():
    src = make_batches(n=10, batch=4)  # batches straddle epochs
    all_ = [b["x"] for _, b in zip(range(6), src.batches(0))]
    later = [b["x"] for _, b in zip(range(2), src.batches(4))]
    assert torch.equal(all_[4], later[0]) and torch.equal(all_[5], later[1])
    first_epoch = torch.cat(all_)[:10]
    assert len({tuple(r.tolist()) for r in first_epoch}) == 10  # each example once per epoch

    class Counter:
        def sample(self, split, n, *, seed):
            return [seed % 1000 + i for i in range(n)]

    tb = TaskBatches(Counter(), lambda xs: {"x": xs}, batch_size=2, seed=7)
    assert list(zip(range(3), tb.batches(0)))[2][1] == next(tb.batches(2))
    assert derive_seed(7, "train", 2) != derive_seed(7, "train", 3)


def test_bf16_autocast_runs_matmuls_in_bf16_and_keeps_fp32_weights():
    seen, losses = [], []

    class Spy(Regression):
        def loss(self, model, batch):
            seen.append(model(batch["x"]).dtype)
            out = super().loss(model, batch)
            losses.append(float(out.loss.detach()))
            return out

    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    cfg = quiet(steps=60, precision="bf16", optimizer=OptimizerConfig(lr=0.05))
    out = Trainer(model, Spy(), make_batches(), cfg).fit()
    assert set(seen) == {torch.bfloat16}
    assert model.weight.dtype == torch.float32
    assert out["final_train_loss"] < losses[0] / 10


def test_resume_auto_without_a_checkpoint_starts_fresh(tmp_path):
    cfg = quiet(steps=4, checkpoint_every=2)
    out = Trainer(nn.Linear(4, 1), Regression(), make_batches(), cfg, run_dir=tmp_path).fit(
        resume="auto"
    )
    assert out["resumed"] is False and out["steps"] == 4
    again = Trainer(
        nn.Linear(4, 1),
        Regression(),
        make_batches(),
        quiet(steps=6, checkpoint_every=2),
        run_dir=tmp_path,
    ).fit(resume=True)
    assert again["resumed"] is True and again["steps"] == 6
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_plot_curves_false_skips_the_plot_but_not_the_report(tmp_path):
    cfg = quiet(steps=3, batch_size=8, plot_curves=False)
    Trainer(nn.Linear(4, 1), Regression(), make_batches(), cfg, run_dir=tmp_path).fit()
    assert not (tmp_path / "curves.png").exists()
    report = (tmp_path / "report.md").read_text()
    assert "train_time_s" in report and "curves.png" not in report


def test_attributes_moved_to_the_trainers_parts_keep_working_with_a_warning(tmp_path):
    """Pre-split names (``evaluator``, ``eval_every``, ``history``, ``run_id``,
    ``finite_through``, ``last_good_checkpoint()``, ``metrics_log()``) reach the part that owns
    them now; setting one changes what the loop uses, instead of a silently ignored attribute."""
    torch.manual_seed(0)
    cfg = quiet(steps=4, batch_size=8, checkpoint_every=2, precision="float32")
    trainer = Trainer(nn.Linear(4, 1), Regression(), make_batches(), cfg, run_dir=tmp_path)
    with pytest.warns(DeprecationWarning, match=r"Trainer.evaluator .* Trainer.evals.evaluator"):
        trainer.evaluator = lambda m: {"bias": float(m.bias)}
    with pytest.warns(DeprecationWarning, match="Trainer.evals.every"):
        trainer.eval_every = 2
    trainer.fit()
    assert [r["step"] for r in trainer.evals.history] == [2, 4]  # the loop used the new values
    with pytest.warns(DeprecationWarning):
        assert trainer.history is trainer.evals.history
    with pytest.warns(DeprecationWarning):
        assert trainer.run_id == trainer.checkpoints.run_id
    with pytest.warns(DeprecationWarning):
        assert trainer.finite_through == trainer.checkpoints.finite_through == 4
    with pytest.warns(DeprecationWarning, match=r"checkpoints.last_good\(\)"):
        assert trainer.last_good_checkpoint() == trainer.checkpoints.last_good() is not None
    with pytest.warns(DeprecationWarning, match=r"log.file\(\)"):
        assert trainer.metrics_log().path == trainer.log.file().path
