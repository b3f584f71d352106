"""LoRA fine-tuning tokens/s: splice vs PEFT on transformers, and splice LoRA vs full fine-tuning.

Setup (every candidate identical): a random tiny ``LlamaForCausalLM`` saved with
``save_pretrained``; transformers loads it (``AutoModelForCausalLM.from_pretrained``) and
splice imports it (``splice.hf.load_pretrained``). LoRA r=16, alpha=32, no dropout, on the
seed's default targets ``q_proj, v_proj`` (PEFT ``LoraConfig(target_modules=["q_proj",
"v_proj"])``, splice ``LoRAConfig(targets="q,v")``); fixed-length random token rows (no
padding), loss on every next token, AdamW fused lr 1e-4, gradient clipping at 1.0, the same
intra-op thread count.

The PEFT side runs a plain PyTorch loop (not TRL): ``model(input_ids, labels).loss.backward()``,
``clip_grad_norm_``, ``optimizer.step()``, ``zero_grad(set_to_none=True)``. The splice side
runs ``Trainer.train_step`` (data, forward, backward, clipping, optimizer) and its periodic
metrics flush. A third candidate is splice *full* fine-tuning of the same model (no adapter)
for the LoRA-step / full-step ratio; a fourth, splice LoRA on every linear (``all-linear``);
a fifth (float32), splice LoRA q,v without its fused LoRA node (``lora_common.unfused``: the
plain autograd path it took before). All candidates alternate step by step in one process
(``harness.compare``); medians and paired ratios are reported. On a CPU the comparison runs
at every core and again at 1 thread (``lora_common.thread_counts``), and one step of each
is profiled (aten op count, matmul GFLOP and time share: ``lora_common.op_profile``).

bf16 autocast is run only where the CPU has native bf16 matmuls (AVX512_BF16 or AMX, from
``torch.backends.cpu.get_cpu_capability()``) or on CUDA; elsewhere bf16 is emulated and the
row is marked "not native on this machine" instead.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from harness import bench_args, compare, device, native, write_section
from lora_common import (
    ALPHA,
    LR,
    MODEL_TEXT,
    PeftStep,
    R,
    SpliceStep,
    build_checkpoint,
    op_profile,
    thread_counts,
    token_rows,
    unfused,
)


def lora(targets: str) -> Any:
    """``apply_lora`` with the benchmark's r and alpha on ``targets``."""
    from splice_lora import LoRAConfig, apply_lora

    return lambda model: apply_lora(model, LoRAConfig(r=R, alpha=ALPHA, targets=targets))


def peft_step(ckpt: Path, rows: torch.Tensor, *, batch: int, bf16: bool) -> PeftStep:
    """PEFT LoRA on q_proj and v_proj over transformers' Llama, in a plain loop."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).to(device())
    cfg = LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    return PeftStep(get_peft_model(base, cfg), rows.to(device()), batch=batch, bf16=bf16)


def same_start_loss(ckpt: Path, rows: torch.Tensor) -> float:
    """|transformers+PEFT loss - splice+LoRA loss| on one batch at the shared start weights."""
    from peft import LoraConfig, get_peft_model
    from splice.hf import load_pretrained
    from splice.objectives.sft import SFTObjective
    from splice_lora import LoRAConfig, apply_lora
    from transformers import AutoModelForCausalLM

    hf = get_peft_model(
        AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32),
        LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["q_proj", "v_proj"]),
    )
    model, _ = load_pretrained(ckpt, dtype=torch.float32)
    apply_lora(model, LoRAConfig(r=R, alpha=ALPHA, targets="q,v"))
    with torch.no_grad():
        a = float(hf(input_ids=rows, labels=rows).loss)
        b = float(SFTObjective().loss(model, {"input_ids": rows, "labels": rows}).loss)
    return abs(a - b)


FUSED, UNFUSED = "splice LoRA q,v", "splice LoRA q,v, unfused (autograd path, before)"
PEFT, FULL, ALL = "PEFT LoRA q,v (plain loop)", "splice full fine-tuning", "splice LoRA all-linear"


def candidates(ckpt: Path, rows: torch.Tensor, *, batch: int, bf16: bool) -> dict[str, Any]:
    p = "bf16" if bf16 else "float32"
    cands = {
        FUSED: SpliceStep(ckpt, rows, batch=batch, precision=p, adapt=lora("q,v")),
        PEFT: peft_step(ckpt, rows, batch=batch, bf16=bf16),
        FULL: SpliceStep(ckpt, rows, batch=batch, precision=p),
        ALL: SpliceStep(ckpt, rows, batch=batch, precision=p, adapt=lora("all-linear")),
    }
    if not bf16:  # under autocast both paths are the same (autocast takes the unfused one)
        cands[UNFUSED] = SpliceStep(ckpt, rows, batch=batch, adapt=unfused(lora("q,v")))
    return cands


def paired(comp: Any, name: str, other: str) -> float:
    """Median over rounds of ``time(name) / time(other)``, both from the same round."""
    return statistics.median(a / b for a, b in zip(comp.samples[name], comp.samples[other]))


def main(quick: bool = False) -> str:
    counts = thread_counts()
    batch, seq_len = (4, 128) if quick else (8, 128)
    warmup, rounds = (2, 3) if quick else (2, 8)
    rows = token_rows(batch, seq_len)
    tokens = batch * seq_len
    cap = torch.backends.cpu.get_cpu_capability()
    lines: list[str] = []
    summary: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "llama"
        build_checkpoint(ckpt, seq_len=seq_len)
        diff = same_start_loss(ckpt, rows[:2])
        assert diff < 1e-4, f"PEFT and splice disagree on the starting loss by {diff}"
        for name, bf16 in (("float32", False), ("bf16 autocast", True)):
            if bf16 and not native(torch.bfloat16):
                lines.append(
                    f"**{name}**: not native on this machine (CPU capability {cap}: no AVX512_BF16"
                    " or AMX, so bf16 matmuls are emulated); not run.\n"
                )
                continue
            cands = candidates(ckpt, rows, batch=batch, bf16=bf16)
            for n in counts if device().type == "cpu" else counts[:1]:
                torch.set_num_threads(n)
                comp = compare(cands, baseline=PEFT, warmup=warmup, rounds=rounds)
                key = f"{name}, {n} thread{'s' if n > 1 else ''}"
                vs_peft, lora_full = comp.speedup(FUSED), paired(comp, FUSED, FULL)
                summary[key] = (vs_peft, lora_full)
                lines.append(f"**{key}**\n")
                lines.append(
                    comp.table(work={k: float(tokens) for k in comp.samples}, unit_name="tokens/s")
                )
                fused = (
                    f"; fused / unfused step: {paired(comp, FUSED, UNFUSED):.3f}"
                    if UNFUSED in cands
                    else ""
                )
                lines.append(
                    f"\nsplice LoRA / PEFT LoRA tokens/s (paired median): **{vs_peft:.2f}x**; splice "
                    f"LoRA step / splice full fine-tuning step (paired median): **{lora_full:.2f}**"
                    f" (all-linear LoRA: {paired(comp, ALL, FULL):.2f}{fused}).\n"
                )
                print(f"{key}: splice/PEFT {vs_peft:.2f}x, LoRA/full {lora_full:.2f}", flush=True)
            torch.set_num_threads(counts[0])
            if not bf16:
                lines.append(f"Profile of one float32 step ({counts[0]} threads):\n")
                table, prof = op_profile({k: cands[k] for k in (FUSED, UNFUSED, PEFT, FULL)})
                lines.append(table + "\n")
                lines.append(
                    f"Matmul FLOPs, splice LoRA / full fine-tuning: {prof[FUSED][1] / prof[FULL][1]:.3f}"
                    " (no weight gradients for the frozen base; the ideal 2/3 less the rank-16"
                    f" products); splice LoRA / PEFT: {prof[FUSED][1] / prof[PEFT][1]:.3f}. aten ops"
                    f" per step, fused / unfused: {prof[FUSED][0] / prof[UNFUSED][0]:.2f}.\n"
                )
    body = (
        f"LoRA fine-tuning, {MODEL_TEXT}, LoRA r={R} alpha={ALPHA:g} on q_proj and v_proj, batch "
        f"{batch} x {seq_len} tokens (no padding, loss on every next token), AdamW fused lr {LR},"
        f" clip 1.0, CPU capability {cap}. PEFT runs in a plain PyTorch loop"
        " (forward with labels, backward, clip, step, zero_grad), splice in its Trainer's"
        f" train_step; one process, candidates alternating step by step; {warmup} warm-up steps"
        f" dropped, medians of {rounds}. Same starting loss on both stacks (|diff| = {diff:.1e})."
        f" The unfused row is splice-lora without its fused LoRA node (`splice_lora.fused`), i.e."
        " the autograd path it took before. The machine was shared with other jobs during the"
        " run: absolute times are inflated, paired ratios are the figures to read; on a CPU, the"
        " float32 comparison runs at every core and again at 1 thread (with more runnable jobs"
        " than cores, a multi-threaded op waits for all its threads to be scheduled, so the"
        " multi-thread figures reward fewer ops, the 1-thread figures measure the arithmetic).\n\n"
        + "\n".join(lines)
        + "\nTargets: splice >= 1.25x PEFT in float32, >= 1.5x in bf16 autocast; splice LoRA step"
        " / full step <= 0.72. Measured: "
        + "; ".join(f"{k}: {v[0]:.2f}x PEFT, LoRA/full {v[1]:.2f}" for k, v in summary.items())
        + ("" if any("bf16" in k for k in summary) else "; bf16: not native on this machine")
        + ".\n"
    )
    return write_section("lora", "LoRA fine-tuning vs PEFT", body)


if __name__ == "__main__":
    main(**bench_args())
