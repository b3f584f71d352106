"""What the LoRA and QLoRA benchmarks share: the tiny Llama checkpoint, token rows, and steps.

* ``build_checkpoint``: a random ``LlamaForCausalLM`` saved with ``save_pretrained``, which
  transformers loads and splice imports (``splice.hf.load_pretrained``), so both sides start
  from the same weights.
* ``SpliceStep``: one splice ``Trainer.train_step`` (data, forward, backward, clipping,
  optimizer) per call, with its periodic metrics flush, the way ``Trainer.fit`` steps.
* ``PeftStep``: one step of a plain PyTorch loop (not TRL) over a PEFT-wrapped transformers
  model: forward with labels, backward, ``clip_grad_norm_``, ``step``, ``zero_grad``.

Both use AdamW (fused) lr ``LR``, no weight decay, clipping at 1.0, no padding, loss on every
next token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from harness import configure_threads, device
from torch import nn

D_MODEL, N_LAYERS, N_HEADS, FFN, VOCAB = 256, 4, 4, 688, 8000
R, ALPHA, LR = 16, 32.0, 1e-4
LOG_EVERY = 10

MODEL_TEXT = (
    f"tiny Llama (d={D_MODEL}, {N_LAYERS} layers, {N_HEADS} heads, SwiGLU {FFN}, "
    f"vocab {VOCAB}, untied)"
)


def build_checkpoint(directory: Path, *, seq_len: int) -> None:
    """Save a seeded random tiny ``LlamaForCausalLM`` (float32) to ``directory``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=D_MODEL, intermediate_size=FFN, num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS, num_key_value_heads=N_HEADS,
        max_position_embeddings=max(512, seq_len), tie_word_embeddings=False,
    )  # fmt: skip
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(directory)


def token_rows(batch: int, seq_len: int) -> torch.Tensor:
    """``(4 * batch, seq_len)`` seeded random token ids: four batches, cycled."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, VOCAB, (4 * batch, seq_len), generator=gen)


def _endless(batches: list[dict[str, torch.Tensor]]) -> Any:
    """A ``BatchSource`` that cycles ``batches`` forever."""

    class Endless:
        def batches(self, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
            i = start
            while True:
                yield batches[i % len(batches)]
                i += 1

    return Endless()


class SpliceStep:
    """One splice ``Trainer`` step per call.

    Args:
        ckpt: the checkpoint ``build_checkpoint`` wrote.
        rows: ``(N, T)`` token ids, cut into batches of ``batch`` rows.
        adapt: applied to the imported model before training (e.g. ``apply_lora``); None
            trains every weight (full fine-tuning).
        precision: the ``TrainConfig.precision`` ("float32" or "bf16").
    """

    def __init__(self, ckpt: Path, rows: torch.Tensor, *, batch: int, precision: str = "float32",
                 adapt: Callable[[nn.Module], Any] | None = None, on_device: bool = True) -> None:  # fmt: skip
        from splice.hf import load_pretrained
        from splice.objectives.sft import SFTConfig, SFTObjective
        from splice.training.configs import OptimizerConfig, TrainConfig
        from splice.training.trainer import Trainer

        model, _ = load_pretrained(ckpt, dtype=torch.float32)
        if on_device:
            model, rows = model.to(device()), rows.to(device())
        if adapt is not None:
            adapt(model)
        self.model = model
        batches = [
            {"input_ids": rows[i : i + batch], "labels": rows[i : i + batch]}
            for i in range(0, rows.shape[0], batch)
        ]
        cfg = TrainConfig(
            steps=10**6, batch_size=batch, max_grad_norm=1.0, precision=precision,  # type: ignore[arg-type]
            optimizer=OptimizerConfig(lr=LR, weight_decay=0.0, fused=True),
            progress=False, log_every=LOG_EVERY,
        )  # fmt: skip
        self.trainer = Trainer(
            model, SFTObjective(SFTConfig(chunk_size=None)), _endless(batches), cfg
        )
        self.batches = self.trainer.source.batches(0)
        model.train()

    def __call__(self) -> None:
        t = self.trainer
        t.train_step(self.batches)
        if t.step % t.config.log_every == 0:
            t.flush()


class PeftStep:
    """One step of a plain PyTorch loop over a PEFT-wrapped transformers causal LM.

    Args:
        model: the transformers model, already wrapped by ``get_peft_model``.
        rows: ``(N, T)`` token ids, cut into batches of ``batch`` rows.
        bf16: run forward under bf16 autocast.
    """

    def __init__(self, model: nn.Module, rows: torch.Tensor, *, batch: int,
                 bf16: bool = False) -> None:  # fmt: skip
        self.model = model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=LR, weight_decay=0.0, fused=True)
        self.rows, self.batch, self.bf16, self.i = rows, batch, bf16, 0

    def __call__(self) -> None:
        n = self.rows.shape[0] // self.batch
        x = self.rows[(self.i % n) * self.batch : (self.i % n + 1) * self.batch]
        self.i += 1
        ctx = (
            torch.autocast(x.device.type, dtype=torch.bfloat16)
            if self.bf16
            else contextlib.nullcontext()
        )
        with ctx:
            loss = self.model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def thread_counts() -> list[int]:
    """The benchmark's thread count (every core, or ``$SPLICE_BENCH_THREADS``), then 1.

    On a shared machine with more runnable jobs than cores, a multi-threaded op waits for
    all its threads to be scheduled, so per-op latency (the number of ops) dominates the
    multi-thread figures; the single-thread run measures the arithmetic.
    """
    n = configure_threads()
    return [n, 1] if n > 1 else [n]


def _identity_hook(module: nn.Module, args: Any, out: Any) -> Any:
    return out


def unfused(adapt: Callable[[nn.Module], Any]) -> Callable[[nn.Module], None]:
    """``adapt``, then a no-op forward hook on every LoRA base: splice-lora then calls the
    base as a module and adds the delta through plain autograd (its path before the fused
    LoRA node), so the fused node can be measured against it in the same run."""
    from splice_lora import LoRALinear

    def apply(model: nn.Module) -> None:
        adapt(model)
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.base_layer.register_forward_hook(_identity_hook)

    return apply


def op_profile(
    steps: dict[str, Callable[[], None]],
) -> tuple[str, dict[str, tuple[int, float, float]]]:
    """Per candidate, one step's aten op count, matmul GFLOP, and matmul share of the step's
    self CPU time (``torch.profiler``), as a Markdown table and as ``{name: (ops, GFLOP,
    share)}``. Op counts and FLOPs do not depend on the machine's load; the time share does."""
    from torch.profiler import ProfilerActivity, profile

    rows = [
        "| candidate | aten ops / step | matmul GFLOP / step | matmul share of self CPU time |",
        "|---|---:|---:|---:|",
    ]
    data: dict[str, tuple[int, float, float]] = {}
    for name, step in steps.items():
        with profile(
            activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=True
        ) as prof:
            step()
        events = prof.key_averages(group_by_input_shape=True)
        ops = sum(e.count for e in events if e.key.startswith("aten::"))
        mm = [
            e for e in events if e.key in ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm")
        ]
        total = sum(e.self_cpu_time_total for e in events)
        share = sum(e.self_cpu_time_total for e in mm) / total if total else 0.0
        data[name] = (ops, sum(map(_flops, mm)) / 1e9, share)
        rows.append(f"| {name} | {ops:,} | {data[name][1]:.2f} | {share:.0%} |")
    return "\n".join(rows), data


def _flops(event: Any) -> float:
    """The profiler's FLOPs, or ``2 m n k`` per call for the in-place ``addmm_`` it skips."""
    if event.key != "aten::addmm_":
        return float(event.flops or 0)
    (m, n), (_, k) = event.input_shapes[0], event.input_shapes[1]
    return 2.0 * m * n * k * event.count
