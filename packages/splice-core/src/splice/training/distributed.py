"""Data-parallel training under ``torchrun``: DDP or FSDP2, one code path for CPU and GPU.

The run is defined by its *global* batch: every rank builds the same global micro-batch
(``train.batch_size`` rows, from the same ``(seed, position)``) and keeps its own contiguous
slice of ``batch_size / world`` rows. Each rank's loss is rescaled so that the averaged
gradient DDP/FSDP computes is exactly the gradient of the global token-weighted mean, i.e.
``world`` ranks with ``B / world`` rows train like one process with ``B`` rows.

Checkpoints hold full, unprefixed weights and index-keyed optimizer state, the same files a
single-process run writes, so a run can resume with a different number of processes.
Only rank 0 writes (metrics, checkpoints, plot, report); every rank evaluates, because an
FSDP2 forward needs every rank, and doing the same under DDP costs no extra wall time.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import Tensor, nn

from splice.checkpoint import CheckpointManager
from splice.checkpoint.state import rng_from_flat
from splice.interfaces import Block, LossOutput, OnlineObjective
from splice.training.configs import TrainConfig
from splice.training.parallel import CheckpointWriter, SingleProcess
from splice.training.stream import Batch, BatchSource
from splice.training.trainer import Trainer

Strategy = Literal["ddp", "fsdp2"]
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job: ``rank`` of ``world_size``, its device and backend."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def init_distributed() -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment (idempotent).

    NCCL with one GPU per local rank when CUDA is available, else gloo on CPU.

    Raises:
        ValueError: a torchrun variable is missing (the script was not launched by torchrun).
    """
    missing = [k for k in _ENV if k not in os.environ]
    if missing and not dist.is_initialized():
        raise ValueError(
            f"train.distributed needs a torchrun launch, but {missing} are not set; run e.g. "
            "`torchrun --nproc_per_node=2 -m splice.cli run RECIPE --set train.distributed=ddp`"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        # Left to interpreter teardown, the backend's threads can be destroyed while still
        # joinable: gloo then aborts the process ("terminate called without an active
        # exception", seen once in CI after a finished run). Shut it down while Python runs.
        atexit.register(_destroy_process_group)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, dist.get_backend())


def shard_batch(batch: Batch, rank: int, world: int) -> dict[str, Any]:
    """Rows ``[rank * B/world, (rank+1) * B/world)`` of every ``(B, ...)`` tensor in ``batch``.

    A batch without tensors of rows (an online run's prompt batch also has lists of
    prompts) is sharded along its lists; lists are sliced alongside tensors of the same
    length.

    Raises:
        ValueError: the batch size ``B`` is not divisible by ``world``.
    """
    sizes = {v.shape[0] for v in batch.values() if isinstance(v, Tensor) and v.ndim > 0}
    if not sizes:
        sizes = {len(v) for v in batch.values() if isinstance(v, list)}
    if len(sizes) != 1:
        raise ValueError(f"cannot shard a batch whose tensors disagree on rows: {sorted(sizes)}")
    (rows,) = sizes
    if rows % world:
        raise ValueError(
            f"the global batch of {rows} rows (train.batch_size, or rollout.prompts_per_step "
            f"for an online objective) must be divisible by the number of processes ({world})"
        )
    per = rows // world

    def part(v: Any) -> Any:
        if (isinstance(v, Tensor) and v.ndim > 0) or (isinstance(v, list) and len(v) == rows):
            return v[rank * per : (rank + 1) * per]
        return v

    return {k: part(v) for k, v in batch.items()}


class ShardedSource:
    """This rank's slice of each global micro-batch of ``source``; positions stay global."""

    def __init__(self, source: BatchSource, rank: int, world: int) -> None:
        self.source, self.rank, self.world = source, rank, world

    def batches(self, start: int = 0) -> Iterator[Batch]:
        for batch in self.source.batches(start):
            yield shard_batch(batch, self.rank, self.world)


class GlobalTokenMean:
    """Wraps an objective so the data-parallel gradient is the global token-weighted mean's.

    Rank ``i`` has a token-mean loss ``L_i`` over ``n_i`` target tokens. The global loss is
    ``sum_i n_i L_i / N`` (``N = sum_j n_j``); DDP/FSDP average gradients over ranks, so
    each rank backpropagates ``world * n_i / N * L_i``. One all-reduce per micro-batch gives
    ``N`` and the global values of the loss and every metric (token-weighted). The returned
    loss *value* is the global loss (what gets logged); its *gradient* is the rescaled one.
    Objectives that report no token count weigh each rank equally. Every rank must report
    the same metric names (they are reduced together, in order).

    It wraps ``loss`` only: the trainer keeps the objective itself for everything else
    (``collect``, ``minibatches``, the optional capabilities it checks with ``isinstance``).
    """

    def __init__(self, objective: Any, world: int) -> None:
        self.objective, self.world = objective, world

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> LossOutput:
        out = self.objective.loss(model, batch)
        n = float(out.n_tokens or out.metrics.get("tokens", 0.0) or 0.0)
        if not out.n_tokens and "tokens" not in out.metrics:
            n = 1.0  # no token count at all: every rank weighs the same
        names = [k for k in out.metrics if k not in ("loss", "tokens")]
        local = torch.tensor(
            [float(out.loss.detach()), *(float(out.metrics[k]) for k in names)],
            dtype=torch.float64,
        )
        # Row 0: token-weighted sums; row 1: plain sums (used if no rank has any token).
        stats = torch.stack(
            [
                torch.cat([torch.tensor([n], dtype=torch.float64), local * n]),
                torch.cat([torch.tensor([1.0], dtype=torch.float64), local]),
            ]
        )
        stats = stats.to(out.loss.device)
        dist.all_reduce(stats)
        total = float(stats[0, 0])
        if total > 0:
            scale, means = self.world * n / total, (stats[0, 1:] / total).tolist()
        else:
            scale, means = 1.0, (stats[1, 1:] / self.world).tolist()
        scaled = out.loss * scale
        global_loss = torch.as_tensor(means[0], dtype=scaled.dtype, device=scaled.device)
        loss = scaled + (global_loss - scaled).detach()  # value: global; gradient: scaled
        metrics = {**dict(zip(names, means[1:])), "loss": means[0], "tokens": total}
        return LossOutput(loss=loss, metrics=metrics, n_tokens=int(total))


def shard_fsdp2(model: nn.Module, device: torch.device, world: int) -> nn.Module:
    """``fully_shard`` every top-level ``Block`` (its own all-gather unit), then the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world,))
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    nested = {id(c) for b in blocks for c in b.modules() if c is not b}
    for block in blocks:
        if id(block) not in nested:
            fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _full(value: Any) -> Any:
    """A plain tensor from a DTensor (e.g. FSDP2's gradient norm); anything else unchanged."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


class DataParallel(SingleProcess):
    """The parallel strategy under torchrun: shards the data, wraps the model (DDP or
    FSDP2), averages what each rank computes alone, and only rank 0 writes.

    Give it to ``Trainer(..., parallel=DataParallel("ddp"))``; ``train_batches`` then yields
    *global* micro-batches. Joins the process group when made.

    Raises:
        ValueError: not launched by torchrun, an unknown strategy, or (at ``check``) an
            online objective or regularizers with FSDP2.
    """

    def __init__(self, strategy: Strategy = "ddp") -> None:
        if strategy not in ("ddp", "fsdp2"):
            raise ValueError(f"train.distributed={strategy!r}: expected 'ddp' or 'fsdp2'")
        self.info = init_distributed()
        self.strategy = strategy
        self.is_main = self.info.is_main
        self.inner: nn.Module | None = None  # the plain model (checkpoints, evaluation)
        self.shadow: nn.Module | None = None  # rank 0's full copy for FSDP2 checkpoints
        self.shadow_optimizer: torch.optim.Optimizer | None = None

    # ------------------------------------------------------------------ setup
    def check(self, objective: Any, regularizers: Sequence[Any]) -> None:
        if self.strategy == "fsdp2" and isinstance(objective, OnlineObjective):
            raise ValueError(
                "online objectives (PPO, GRPO) generate per rank, and an FSDP2 forward needs "
                "every rank in step; use train.distributed='ddp'"
            )
        if self.strategy == "fsdp2" and regularizers:
            raise ValueError(
                "regularizers read parameters directly, which FSDP2 shards; "
                "use train.distributed='ddp' with regularizers"
            )

    def wrap_model(self, model: nn.Module) -> nn.Module:
        info = self.info
        model = model.to(info.device)
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [info.local_rank] if info.device.type == "cuda" else None
            self.inner = model
            return DistributedDataParallel(model, device_ids=ids)
        if info.is_main:
            self.shadow = copy.deepcopy(model).to("cpu")
        self.inner = shard_fsdp2(model, info.device, info.world_size)
        return self.inner

    def eval_model(self, model: nn.Module) -> nn.Module:
        return self.inner if self.inner is not None else model

    def wrap_objective(self, objective: Any) -> Any:
        return GlobalTokenMean(objective, self.info.world_size)

    def wrap_source(self, source: BatchSource) -> BatchSource:
        return ShardedSource(source, self.info.rank, self.info.world_size)

    def shared_run_id(self, run_id: str, device: torch.device) -> str:
        """Rank 0's run id on every rank: each rank then names the same checkpoints (last
        good one, this run's) in its messages. A resume sets it from the checkpoint."""
        ids = torch.tensor(list(bytes.fromhex(run_id)), dtype=torch.int64).to(device)
        dist.broadcast(ids, src=0)
        return bytes(ids.tolist()).hex()

    # ------------------------------------------------------------------ a step
    def no_sync(self, model: nn.Module, last_micro: bool) -> contextlib.AbstractContextManager[Any]:
        """Skip the gradient all-reduce / reduce-scatter on all but the last micro-batch."""
        if last_micro:
            return contextlib.nullcontext()
        if self.strategy == "ddp":  # model is the DistributedDataParallel wrapper
            no_sync = cast(Callable[[], contextlib.AbstractContextManager[Any]], model.no_sync)
            return no_sync()
        return _fsdp_no_sync(model)

    def mean_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each metric averaged over ranks (every rank reports the same names)."""
        if not metrics:
            return metrics
        names = sorted(metrics)
        values = torch.tensor([float(metrics[k]) for k in names], dtype=torch.float64)
        values = values.to(self.info.device)
        dist.all_reduce(values)
        return dict(zip(names, (values / self.info.world_size).tolist()))

    def sync_grads(self, modules: Mapping[str, nn.Module]) -> None:
        """All-reduce (mean) the gradients of the objective's own modules (not under DDP)."""
        for module in modules.values():
            for p in module.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad.div_(self.info.world_size)

    def full_tensor(self, value: Tensor | None) -> Tensor | None:
        return cast("Tensor | None", _full(value))

    def global_tokens(self, tokens: list[Tensor | int]) -> list[Tensor | int]:
        counts = torch.tensor(
            [float(t) for t in tokens], dtype=torch.float64, device=self.info.device
        )
        dist.all_reduce(counts)
        return [int(c) for c in counts.tolist()]

    # ------------------------------------------------------------------ checkpoints
    def non_finite(self, bad: list[str]) -> str | None:
        """Every rank checks its own weights (its shards, under FSDP2) and all agree: when
        any rank finds a non-finite value, every rank reports the ranks that did (and this
        rank's tensors, if it is one of them)."""
        info = self.info
        flags = torch.zeros(info.world_size, dtype=torch.int32, device=info.device)
        flags[info.rank] = int(bool(bad))
        dist.all_reduce(flags)
        ranks = [r for r, flag in enumerate(flags.tolist()) if flag]
        if not ranks:
            return None
        names = ", ".join(bad) if bad else "not in this rank's part"
        where = f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"
        return f"weights ({names}) on {where} after the update"

    def save_checkpoint(
        self,
        mgr: CheckpointManager,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        write: CheckpointWriter,
    ) -> Path | None:
        """Gather full weights and optimizer state (collective), then rank 0 writes them."""
        full: nn.Module | None
        full_opt: torch.optim.Optimizer | None
        if self.strategy == "ddp":
            full, full_opt = self.inner, optimizer
        else:
            full, full_opt = self.gather_fsdp2(model, optimizer)
        if self.is_main:
            assert full is not None
            write(full, full_opt)
        # Every rank records the path (the loop's end checks it), and none races ahead
        # (e.g. to resume) before the files exist.
        dist.barrier()
        return mgr.root / f"step-{step:06d}"

    def gather_fsdp2(
        self, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[nn.Module | None, torch.optim.Optimizer | None]:
        """Full weights and optimizer state in rank 0's shadow copy (None on other ranks)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd = get_model_state_dict(model, options=opts)
        osd = get_optimizer_state_dict(model, optimizer, options=opts)
        if self.shadow is None:
            return None, None  # ranks > 0 only took part in the gather
        shadow_opt = self.shadow_optimizer_for(optimizer)
        _load_state_dict(self.shadow, msd)  # type: ignore[arg-type]
        shadow_opt.load_state_dict(fqn_to_index(osd, self.shadow, shadow_opt))
        return self.shadow, shadow_opt

    def shadow_optimizer_for(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Rank 0's optimizer over the shadow copy (built like the sharded one)."""
        assert self.shadow_optimizer is not None
        return self.shadow_optimizer

    def bind_optimizer(self, build: Callable[[nn.Module], torch.optim.Optimizer]) -> None:
        """Build rank 0's shadow optimizer the way the run's optimizer was built."""
        if self.shadow is not None:
            self.shadow_optimizer = build(self.shadow)

    def checkpoint_to_resume(self, mgr: CheckpointManager | None) -> Path | None:
        """Rank 0's latest intact checkpoint, on every rank (the run folder must be shared)."""
        latest = mgr.latest_intact(set_aside=True) if mgr is not None and self.is_main else None
        step = torch.tensor([-1 if latest is None else int(latest.name.split("-")[1])])
        dist.broadcast(step, src=0)  # every rank loads the checkpoint rank 0 saw
        if int(step) < 0 or mgr is None:
            return None
        return mgr.root / f"step-{int(step):06d}"

    def load_checkpoint(
        self,
        mgr: CheckpointManager,
        path: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
    ) -> dict[str, Any]:
        if self.strategy == "ddp":
            assert self.inner is not None
            return mgr.load(path, model=self.inner, optimizer=optimizer)
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        st: dict[str, Any]
        if self.shadow is not None:
            shadow_opt = self.shadow_optimizer_for(optimizer)
            st = mgr.load(path, model=self.shadow, optimizer=shadow_opt)
            msd = self.shadow.state_dict()
            osd = index_to_fqn(shadow_opt, self.shadow)
        else:  # rank 0 broadcasts the tensors; the rest only need the step and RNG
            st = json.loads((path / "trainer_state.json").read_text())
            rng_from_flat(load_file(str(path / "rng.safetensors")), st["rng"])
            msd, osd = {}, {}
        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(model, msd, options=opts)
        set_optimizer_state_dict(model, optimizer, osd, options=opts)
        return st


def distributed_trainer(
    model: nn.Module,
    objective: Any,
    train_batches: BatchSource | Iterable[Batch],
    config: TrainConfig,
    *,
    strategy: Strategy | None = None,
    **kwargs: Any,
) -> Trainer:
    """A ``Trainer`` given ``DataParallel(strategy)`` (default ``config.distributed``).

    Takes the same arguments as ``Trainer``; ``train_batches`` yields *global* micro-batches.
    """
    parallel = DataParallel(strategy or cast(Strategy, config.distributed))
    return Trainer(model, objective, train_batches, config, parallel=parallel, **kwargs)


# The name of the subclass this factory replaced; it returns a plain ``Trainer``.
DistributedTrainer = distributed_trainer


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module) -> Iterator[None]:
    model.set_requires_gradient_sync(False)  # type: ignore[operator]
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)  # type: ignore[operator]


def _load_state_dict(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Copy a full state dict into ``model``; tied weights may appear under one name only."""
    missing, unexpected = model.load_state_dict(dict(state), strict=False)
    names = dict(model.named_parameters(remove_duplicate=False))
    tied = {n for n in missing if n in names and any(names[n] is names[k] for k in state)}
    if set(missing) - tied or unexpected:
        raise ValueError(f"gathered state does not match: missing {missing}, extra {unexpected}")


def _param_names(model: nn.Module) -> dict[int, list[str]]:
    """``id(param) -> every name it has`` (tied weights have several)."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return names


def fqn_to_index(
    osd: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """An FQN-keyed optimizer state dict (``get_optimizer_state_dict``) -> ``optimizer``'s
    own index-keyed layout, matching names through ``model``'s parameters."""
    names = _param_names(model)
    index: dict[str, int] = {}
    i = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            for name in names[id(p)]:
                index[name] = i
            i += 1
    state = {index[fqn]: dict(s) for fqn, s in osd["state"].items()}
    groups = []
    for g in osd["param_groups"]:
        groups.append({**g, "params": sorted({index[f] for f in g["params"]})})
    return {"state": state, "param_groups": groups}


def index_to_fqn(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, Any]:
    """The inverse of ``fqn_to_index``: ``optimizer.state_dict()`` keyed by parameter names."""
    names = _param_names(model)
    order = [p for g in optimizer.param_groups for p in g["params"]]
    by_index = {i: names[id(p)][0] for i, p in enumerate(order)}
    sd = optimizer.state_dict()
    return {
        "state": {by_index[i]: s for i, s in sd["state"].items()},
        "param_groups": [
            {**g, "params": [by_index[i] for i in g["params"]]} for g in sd["param_groups"]
        ],
    }
