"""Recipe ``forgetting``: the trade-off between learning task B and keeping task A, per method.

The seed claims that a lower learning rate, L2 regularization toward the start (L2-SP),
EWC, a KL penalty to the pre-trained model and LoRA (whose scale sets how far the model may
move) mitigate catastrophic forgetting. Each of them has a strength, and at full strength
any of them "keeps" task A by not learning task B at all; so a single setting says little.
This recipe sweeps every method's strength and reports the **frontier**: task-B accuracy
against task-A retention, one curve per method. A method helps when its curve lies above
the others: more B for the same retention, or more retention for the same B.

The tasks share a skill the way pre-training and fine-tuning do. Task A (pre-training) is
two-digit addition, ``37+25=`` -> ``26`` (answer digits least-significant first). Task B
(fine-tuning) is the *same addition* asked with a new prompt end and answered in a new
output script, digits 0-9 written as the letters a-j: ``37+25:`` -> ``cg``. Learning B
can reuse A's carries and digit sums (full fine-tuning of the pre-trained model reaches
98.5% on distinct held-out B problems in 400 steps), and only the output format is new, as when a pre-trained model is
fine-tuned into a new format or language. The two prompts
differ (``=`` vs ``:``), so one model can do both: forgetting here is not forced by a
contradiction in the data. (The earlier version used subtraction as task B, a competing
skill in the same format rather than a shared one.)

Methods and their strengths (``methods``; each a ``MethodConfig`` whose ``strength`` path
is set to each of its ``values`` in turn):

* ``full``: full fine-tuning at the base learning rate (the baseline, one point);
* ``low_lr``: full fine-tuning at lower learning rates (strength: the learning rate);
* ``l2sp`` / ``ewc`` / ``kl``: full fine-tuning + the splice-forgetting regularizer
  (strength: its weight; EWC's Fisher is estimated on task-A batches, mean-normalised);
* ``lora`` / ``qlora``: a LoRA adapter on every linear layer and the output head of the
  frozen base (QLoRA: the base quantized to NF4 first); strength: ``alpha`` at a fixed rank, i.e. the scale
  ``alpha / r`` the seed names as what "controls the extent of parameter modification";
* ``replay``: full fine-tuning on a mixture of B with a share of task-A examples (strength:
  that share), the known-good baseline of continual learning.

Pre-training runs once and is reused while its config and the code are unchanged
(``reuse_pretrained``). Every point is a plain ``ExperimentConfig`` run by
``run_experiment`` in its own folder, scored by greedy exact match on the same held-out
problems of both tasks (operand pairs never seen in training by either task). Output: a
table (Pareto-optimal points marked), ``forgetting.json`` and the plot ``forgetting.png``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from splice.config import AdapterField, ModelField, RegularizerField, SpliceConfig, TaskField
from splice.overrides import apply_overrides
from splice.recipe import Recipe
from splice.registry import ENTRY_POINT_GROUP
from splice.training.configs import (
    DataConfig,
    ExperimentConfig,
    ScheduleConfig,
    TrainConfig,
)

from splice_recipes.common import (
    addition_task,
    save_config,
    save_report,
    save_table,
    short_run,
    tiny_decoder,
    two_task_experiment,
)

VOCAB = 52  # pad/bos/eos + the default character alphabet


class MethodConfig(SpliceConfig):
    """One fine-tuning method and the strengths it is swept over (one point each).

    Attributes:
        name: the method's label (its points' run folders are ``<name>-<i>``).
        strength: dotted path, inside this config, that each of ``values`` is written to
            (``"lr"``, ``"regularizers.0.weight"``, ``"adapter.alpha"``, ``"replay"``);
            None for a single point (``values`` must then be empty).
        values: the strengths, in the order they are run and plotted.
        lr: peak learning rate; None uses ``finetune.optimizer.lr``.
        regularizers: added to the SFT loss (splice-forgetting: ``l2sp``, ``ewc``, ``kl_reference``).
        adapter: e.g. ``{"type": "lora", ...}`` or ``{"type": "qlora", ...}``; freezes the base.
        replay: share of each fine-tuning batch drawn from task A (0: task B only).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    strength: str | None = None
    values: list[float] = Field(default_factory=list)
    lr: PositiveFloat | None = None
    regularizers: list[RegularizerField] = Field(default_factory=list)  # type: ignore[valid-type]
    adapter: AdapterField | None = None  # type: ignore[valid-type]
    replay: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _strength_path(self) -> MethodConfig:
        if self.strength is None:
            if self.values:
                raise ValueError(f"method {self.name!r}: values given but no strength path")
            return self
        if not self.values:
            raise ValueError(f"method {self.name!r}: strength={self.strength!r} needs values")
        if self.strength in ("name", "strength", "values") or self.strength.startswith("values."):
            raise ValueError(f"method {self.name!r}: strength cannot be {self.strength!r}")
        for value in self.values:  # each point must be a valid config (names the bad path)
            point(self, value)
        return self

    def points(self) -> list[tuple[float | None, MethodConfig]]:
        """``(strength value, the method config at that strength)``, one per point."""
        if self.strength is None:
            return [(None, self)]
        return [(v, point(self, v)) for v in self.values]


def point(method: MethodConfig, value: float) -> MethodConfig:
    """``method`` with ``value`` written at its ``strength`` path (validated)."""
    if value == int(value) and method.strength and method.strength.endswith(".r"):
        value = int(value)  # a rank is an integer
    return apply_overrides(
        method.model_copy(update={"strength": None, "values": []}),
        [f"{method.strength}={json.dumps(value)}"],
    )


def _new_task() -> dict[str, Any]:
    # Same additions, new prompt end and output script: "37+25:" -> "cg" (= "26").
    return addition_task(separator=":", answer_digits="abcdefghij")


def _default_pretrain() -> TrainConfig:
    # 2000 steps: 97% on the distinct held-out A problems (1000 steps read 100% only while
    # held-out sets were drawn with replacement, mostly one-digit sums; on distinct problems
    # they reach 66%, and full fine-tuning then learns 2% of B in 200 steps).
    schedule = ScheduleConfig(kind="cosine", warmup_steps=100, min_lr_ratio=0.05)
    return short_run(steps=2000, batch_size=64, lr=3e-3, log_every=100, schedule=schedule,
                     progress=False)  # fmt: skip


def _default_finetune() -> TrainConfig:
    schedule = ScheduleConfig(kind="cosine", warmup_steps=20, min_lr_ratio=0.1)
    # ~30 short runs: the curves plot would cost more than the training of each. 400 steps:
    # full fine-tuning reaches 98.5% on distinct held-out B problems from the 2000-step start.
    return short_run(steps=400, batch_size=64, lr=1e-3, log_every=50, schedule=schedule,
                     progress=False, plot_curves=False)  # fmt: skip


#: Every linear layer *and* the output head: task B answers with tokens (letters) the
#: pre-trained head never produced. With "all-linear" (head frozen) LoRA learned nothing of B
#: in 200 steps (0-0.5% at alpha 2-16) and still lost A; the usual practice for new output
#: tokens is to train the head too.
LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,up,down,lm_head"


def _lora(kind: str) -> dict[str, Any]:
    extra = {"dropout": 0.0} if kind == "qlora" else {}  # QLoRA's default is 0.05; match LoRA
    return {"type": kind, "r": 8, "alpha": 16.0, "targets": LORA_TARGETS, **extra}


def _default_methods() -> list[MethodConfig]:
    ewc = {"type": "ewc", "weight": 1.0, "n_batches": 8, "normalize": "mean"}
    return [
        MethodConfig(name="full"),
        MethodConfig(name="low_lr", strength="lr", values=[3e-4, 1e-4, 3e-5, 1e-5]),
        MethodConfig(
            name="l2sp",
            strength="regularizers.0.weight",
            values=[0.3, 1.0, 3.0, 10.0],
            regularizers=[{"type": "l2sp", "weight": 0.1}],
        ),
        MethodConfig(
            name="ewc",
            strength="regularizers.0.weight",
            values=[1.0, 10.0, 30.0, 100.0],
            regularizers=[ewc],
        ),
        MethodConfig(
            name="kl",
            strength="regularizers.0.weight",
            values=[0.3, 0.5, 0.7, 1.0],
            regularizers=[{"type": "kl_reference", "weight": 0.3}],
        ),
        # LoRA's usual learning rate is higher than full fine-tuning's (B starts at zero).
        MethodConfig(
            name="lora",
            strength="adapter.alpha",
            values=[4.0, 8.0, 16.0, 32.0],
            lr=3e-3,
            adapter=_lora("lora"),
        ),
        MethodConfig(
            name="qlora",
            strength="adapter.alpha",
            values=[4.0, 8.0, 16.0, 32.0],
            lr=3e-3,
            adapter=_lora("qlora"),
        ),
        MethodConfig(name="replay", strength="replay", values=[0.01, 0.05, 0.1, 0.25]),
    ]


class ForgettingConfig(SpliceConfig):
    """Pre-train on ``old_task``, then fine-tune on ``new_task`` once per (method, strength).

    Attributes:
        model: the decoder (every point starts from the same pre-trained weights).
        old_task / new_task: task A (pre-training) and task B (fine-tuning).
        pretrain / finetune: trainer settings; a method's ``lr`` overrides ``finetune``'s.
        methods: the methods compared, each swept over its strengths.
        eval_examples: held-out problems per task scored by greedy exact match.
        reference_batches: task-A batches handed to the regularizers' ``setup``
            (EWC estimates its Fisher on them).
        reuse_pretrained: skip pre-training when ``<output_dir>/pretrain`` holds a finished
            run of the identical pre-training config and code.
        plot: write ``forgetting.png`` (the frontier).
        output_dir: run folder; ``pretrain/`` and one sub-folder per point go inside.
    """

    name: str = "forgetting"
    seed: int = 0
    model: ModelField = Field(default_factory=lambda: tiny_decoder(VOCAB), validate_default=True)  # type: ignore[valid-type]
    old_task: TaskField = Field(default_factory=addition_task, validate_default=True)  # type: ignore[valid-type]
    new_task: TaskField = Field(default_factory=_new_task, validate_default=True)  # type: ignore[valid-type]
    max_len: PositiveInt = 16
    pretrain: TrainConfig = Field(default_factory=_default_pretrain)
    finetune: TrainConfig = Field(default_factory=_default_finetune)
    methods: list[MethodConfig] = Field(default_factory=_default_methods, min_length=1)
    eval_examples: NonNegativeInt = 200
    max_new_tokens: PositiveInt = 5
    reference_batches: PositiveInt = 8
    reuse_pretrained: bool = True
    plot: bool = True
    output_dir: str | None = None

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, methods: list[MethodConfig]) -> list[MethodConfig]:
        names = [m.name for m in methods]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"methods: names must be unique, {dupes} repeat")
        return methods

    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"


def pretrain_config(config: ForgettingConfig) -> ExperimentConfig:
    """Task A from scratch; task B scored too (the starting point of every curve)."""
    return two_task_experiment(config, "pretrain", task=config.old_task,
                       others={"new": config.new_task}, train=config.pretrain)  # fmt: skip


def point_config(
    config: ForgettingConfig, method: MethodConfig, folder: str, init_from: str
) -> ExperimentConfig:
    """Task B (with ``method.replay`` of task A mixed in) from the pre-trained weights.

    Metrics: ``exact_match`` (task B) and ``old/exact_match`` (task A); with replay the
    run's own ``exact_match`` is on the mixture, and task B is scored as ``new/exact_match``.
    """
    train = config.finetune
    if method.lr is not None:
        train = train.model_copy(
            update={"optimizer": train.optimizer.model_copy(update={"lr": method.lr})}
        )
    task, others = config.new_task, {"old": config.old_task}
    if method.replay > 0:
        others = {"new": config.new_task, **others}
        task = {"type": "mixture", "tasks": [config.new_task, config.old_task],
                "weights": [1.0 - method.replay, method.replay]}  # fmt: skip
    reference = None
    if method.regularizers:  # EWC's Fisher (and any regularizer's setup) sees task A
        reference = DataConfig(task=config.old_task, max_len=config.max_len)
    return two_task_experiment(
        config,
        folder,
        task=task,
        others=others,
        train=train,
        regularizers=method.regularizers,
        adapter=method.adapter,
        init_from=init_from,
        reference_data=reference,
        reference_batches=config.reference_batches,
    )


def strength_label(method: MethodConfig, value: float | None) -> str:
    """``"lr=1e-4"``, ``"weight=0.1"``, ``"alpha=4"``, ``"replay=5%"``; ``"-"`` for one point."""
    if value is None or method.strength is None:
        return "-"
    key = method.strength.rsplit(".", 1)[-1]
    return f"replay={value:.0%}" if key == "replay" else f"{key}={value:g}"


def pareto_flags(points: list[tuple[float, float]]) -> list[bool]:
    """For each ``(retention, accuracy B)``: True unless another point is at least as good on
    both and strictly better on one (it is then *dominated*)."""
    return [
        not any(
            r2 >= r and b2 >= b and (r2 > r or b2 > b)
            for j, (r2, b2) in enumerate(points)
            if j != i
        )
        for i, (r, b) in enumerate(points)
    ]


def markdown_table(rows: list[dict[str, Any]], pretrain: dict[str, Any]) -> str:
    """The report as a Markdown table: the pre-trained model, then one row per point."""
    lines = [
        "| method | strength | acc B | acc A | A retained | Pareto | trainable params "
        "| train time (s) |",
        "|---|---|---:|---:|---:|:---:|---:|---:|",
        f"| (pre-trained) | - | {pretrain['new_accuracy']:.1%} | {pretrain['old_accuracy']:.1%} "
        "| 100.0% | | | |",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['strength']} | {r['new_after']:.1%} | {r['old_after']:.1%} "
            f"| {_percent(r['old_retained'])} | {'*' if r['pareto'] else ''} "
            f"| {r['trainable_params']:,} | {r['train_time_s']:.1f} |"
        )
    return "\n".join(lines)


def _percent(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _retained(row: dict[str, Any]) -> float:
    """Retention in percent for the plot (A accuracy when retention is undefined)."""
    return 100 * (row["old_after"] if row["old_retained"] is None else row["old_retained"])


def plot_frontier(rows: list[dict[str, Any]], pretrain: dict[str, Any], path: Path) -> None:
    """``path`` (PNG): task-B accuracy against task-A retention, one line per method in the
    order of its strengths, Pareto-optimal points circled, the pre-trained model as a star."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        xs = [_retained(r) for r in mine]
        ys = [100 * r["new_after"] for r in mine]
        (line,) = ax.plot(xs, ys, marker="o", label=method)
        for r, x, y in zip(mine, xs, ys, strict=True):
            if r["strength"] != "-":
                ax.annotate(r["strength"].split("=")[-1], (x, y), fontsize=7,
                            xytext=(3, 3), textcoords="offset points", color=line.get_color())  # fmt: skip
    front = [r for r in rows if r["pareto"]]
    ax.scatter([_retained(r) for r in front], [100 * r["new_after"] for r in front],
               s=160, facecolors="none", edgecolors="black", label="Pareto-optimal")  # fmt: skip
    ax.scatter([100.0], [100 * pretrain["new_accuracy"]], marker="*", s=150, color="black",
               label="pre-trained")  # fmt: skip
    ax.set_xlabel("task A (addition) retained after fine-tuning, % of before")
    ax.set_ylabel("task B (addition in a new script) accuracy, %")
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Forgetting trade-off: each method swept over its strength")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pretrain(config: ForgettingConfig) -> dict[str, Any]:
    """Run (or, with ``reuse_pretrained``, reuse) the task-A pre-training; its report.

    The points load the pre-trained weights from the pre-training run folder (its latest
    checkpoint), so a copied or moved folder still works.
    """
    from splice.checkpoint import CheckpointManager
    from splice.training.experiment import run_experiment

    exp = pretrain_config(config)
    folder = Path(exp.run_dir())
    summary = folder / "summary.json"
    wanted = exp.model_dump(mode="json", exclude={"output_dir"})
    code = code_fingerprint()
    if config.reuse_pretrained and summary.is_file():
        saved = json.loads(summary.read_text())
        done = CheckpointManager(folder / "checkpoints").latest() is not None
        if saved.get("config") == wanted and done:
            if saved.get("code") == code:
                print(f"reusing the pre-trained model in {folder}", flush=True)
                return saved["report"]  # type: ignore[no-any-return]
            print(f"the splice code changed since {folder} was pre-trained: again", flush=True)
    # The recipe decided to (re)train: an older pre-training in the folder is replaced.
    report = run_experiment(exp, overwrite=True)
    summary.write_text(json.dumps({"config": wanted, "code": code, "report": report}, indent=2))
    return report


def code_fingerprint() -> str:
    """SHA-256 of the Python sources of splice-core, its installed plugins and the recipes.

    A pre-trained model is reused only if the code that trained it is the code running now:
    a change that only alters float rounding moves the pre-trained model, and every point
    with it. The packages are those of the ``splice`` entry points (every installed plugin).
    """
    digest = hashlib.sha256()
    for root in fingerprinted_packages():
        for directory in getattr(importlib.import_module(root), "__path__", []):
            for path in sorted(Path(directory).rglob("*.py")):
                digest.update(f"{root}/{path.relative_to(directory).as_posix()}\0".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprinted_packages() -> list[str]:
    """splice-core, the recipes and the top-level package of every ``splice`` entry point."""
    roots = {"splice", "splice_recipes"}
    roots |= {ep.value.split(":")[0].split(".")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(roots)


def run(config: ForgettingConfig) -> dict[str, Any]:
    """Pre-train once, fine-tune every (method, strength), print and save table and plot.

    Returns:
        ``{"name", "run_dir", "pretrain": {...}, "rows": [...]}``; each row holds
        ``method``, ``strength`` (label), ``value``, ``new_after`` (B), ``old_after`` (A),
        ``old_retained`` (A after / A before), ``pareto``, ``trainable_params``,
        ``train_time_s``, ``final_train_loss``, ``run_dir``.
    """
    from splice.training.experiment import run_experiment

    run_dir = Path(config.run_dir())
    save_config(run_dir, config)

    pre = _pretrain(config)
    old_before = float(pre["eval"]["exact_match"])
    pretrain = {
        "old_accuracy": old_before,
        "new_accuracy": float(pre["eval"]["new/exact_match"]),
        "train_time_s": float(pre["train_time_s"]),
        "steps": int(pre["steps"]),
    }
    print(f"pre-trained on task A: A {old_before:.1%}, B {pretrain['new_accuracy']:.1%} "
          f"({pretrain['train_time_s']:.0f} s)", flush=True)  # fmt: skip
    if old_before == 0:  # retention is then undefined (None); only tiny smoke runs get here
        print("warning: the pre-trained model solves no task-A problem", flush=True)

    rows: list[dict[str, Any]] = []
    init_from = str(run_dir / "pretrain")
    for method in config.methods:
        for i, (value, at) in enumerate(method.points()):
            folder = method.name if value is None else f"{method.name}-{i}"
            rep = run_experiment(point_config(config, at, folder, init_from), overwrite=True)
            old_after = float(rep["eval"]["old/exact_match"])
            rows.append({
                "method": method.name,
                "strength": strength_label(method, value),
                "value": value,
                "new_after": float(rep["eval"].get("new/exact_match", rep["eval"]["exact_match"])),
                "old_after": old_after,
                "old_retained": old_after / old_before if old_before else None,
                "trainable_params": int(rep["trainable_params"]),
                "train_time_s": float(rep["train_time_s"]),
                "final_train_loss": float(rep["final_train_loss"]),
                "run_dir": str(run_dir / folder),
            })  # fmt: skip
            r = rows[-1]
            print(f"{method.name} {r['strength']}: B {r['new_after']:.1%}, A {old_before:.1%} -> "
                  f"{old_after:.1%} ({r['train_time_s']:.1f} s)", flush=True)  # fmt: skip
    # A after is retention times a constant: the same ranking, and defined in smoke runs too.
    flags = pareto_flags([(r["old_after"], r["new_after"]) for r in rows])
    for r, flag in zip(rows, flags, strict=True):
        r["pareto"] = flag

    table = markdown_table(rows, pretrain)
    save_table(run_dir, "forgetting", table)
    print(table)
    if config.plot:
        plot_frontier(rows, pretrain, run_dir / "forgetting.png")
        print(f"frontier plot: {run_dir / 'forgetting.png'}")
    report = {"name": config.name, "run_dir": str(run_dir), "pretrain": pretrain, "rows": rows}
    save_report(run_dir, "forgetting", report)
    return report


def config() -> ForgettingConfig:
    return ForgettingConfig()


def quick() -> ForgettingConfig:
    """A minutes-scale version for tests and smoke runs: a smaller model, fewer steps, fewer
    problems, the same methods and four strengths each (figures are not meaningful)."""
    base = config()
    return apply_overrides(base, [
        "model.d_model=16", "model.n_layers=1", "pretrain.steps=4",
        "pretrain.schedule.warmup_steps=1", "finetune.steps=2", "finetune.schedule.warmup_steps=1",
        "pretrain.batch_size=8", "finetune.batch_size=8", "eval_examples=6",
        "reference_batches=2", "methods.3.regularizers.0.n_batches=2",
        "pretrain.plot_curves=false",
    ])  # fmt: skip


recipe = Recipe(
    name="forgetting",
    description="pre-train on addition, fine-tune on addition in a new output script: task-B "
    "accuracy vs task-A retention for low LR, L2-SP, EWC, KL, LoRA, QLoRA and replay, each "
    "swept over its strength",
    config=config,
    run=run,
)
