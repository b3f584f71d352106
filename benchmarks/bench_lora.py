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
for the LoRA-step / full-step ratio; a fourth, splice LoRA on every linear (``all-linear``).
All candidates alternate step by step in one process (``harness.compare``); medians and
paired ratios are reported.

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
from harness import bench_args, compare, configure_threads, device, native, write_section
from lora_common import ALPHA, LR, MODEL_TEXT, PeftStep, R, SpliceStep, build_checkpoint, token_rows


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


def run_dtype(ckpt: Path, rows: torch.Tensor, *, batch: int, bf16: bool, warmup: int,
              rounds: int) -> Any:  # fmt: skip
    precision = "bf16" if bf16 else "float32"
    cands = {
        "splice LoRA q,v": SpliceStep(ckpt, rows, batch=batch, precision=precision, adapt=lora("q,v")),
        "PEFT LoRA q,v (plain loop)": peft_step(ckpt, rows, batch=batch, bf16=bf16),
        "splice full fine-tuning": SpliceStep(ckpt, rows, batch=batch, precision=precision),
        "splice LoRA all-linear": SpliceStep(ckpt, rows, batch=batch, precision=precision, adapt=lora("all-linear")),
    }  # fmt: skip
    return compare(cands, baseline="PEFT LoRA q,v (plain loop)", warmup=warmup, rounds=rounds)


def paired(comp: Any, name: str, other: str) -> float:
    """Median over rounds of ``time(name) / time(other)``, both from the same round."""
    return statistics.median(a / b for a, b in zip(comp.samples[name], comp.samples[other]))


def main(quick: bool = False) -> str:
    threads = configure_threads()
    batch, seq_len = (4, 128) if quick else (8, 128)
    warmup, rounds = (2, 3) if quick else (3, 12)
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
            comp = run_dtype(ckpt, rows, batch=batch, bf16=bf16, warmup=warmup, rounds=rounds)
            work = {k: float(tokens) for k in comp.samples}
            vs_peft = comp.speedup("splice LoRA q,v")
            lora_full = paired(comp, "splice LoRA q,v", "splice full fine-tuning")
            summary[name] = (vs_peft, lora_full)
            lines.append(f"**{name}**\n")
            lines.append(comp.table(work=work, unit_name="tokens/s"))
            lines.append(
                f"\nsplice LoRA / PEFT LoRA tokens/s (paired median): **{vs_peft:.2f}x**; splice "
                f"LoRA step / splice full fine-tuning step (paired median): **{lora_full:.2f}**"
                " (all-linear LoRA:"
                f" {paired(comp, 'splice LoRA all-linear', 'splice full fine-tuning'):.2f}).\n"
            )
            print(f"{name}: splice/PEFT {vs_peft:.2f}x, LoRA/full {lora_full:.2f}", flush=True)
    f32 = summary.get("float32")
    b16 = summary.get("bf16 autocast")
    body = (
        f"LoRA fine-tuning, {MODEL_TEXT}, LoRA r={R} alpha={ALPHA:g} on q_proj and v_proj, batch "
        f"{batch} x {seq_len} tokens (no padding, loss on every next token), AdamW fused lr {LR},"
        f" clip 1.0, {threads} threads, CPU capability {cap}. PEFT runs in a plain PyTorch loop"
        " (forward with labels, backward, clip, step, zero_grad), splice in its Trainer's"
        f" train_step; one process, candidates alternating step by step; {warmup} warm-up steps"
        f" dropped, medians of {rounds}. Same starting loss on both stacks (|diff| = {diff:.1e})."
        " The machine was shared with other jobs during the run: absolute times are inflated,"
        " paired ratios are the figures to read.\n\n"
        + "\n".join(lines)
        + "\nTargets: splice >= 1.25x PEFT in float32 (measured "
        + (f"{f32[0]:.2f}x" if f32 else "n/a")
        + "), >= 1.5x in bf16 autocast ("
        + (f"{b16[0]:.2f}x" if b16 else "not native on this machine")
        + "); splice LoRA step / full step <= 0.72 (float32: "
        + (f"{f32[1]:.2f}" if f32 else "n/a")
        + (f", bf16: {b16[1]:.2f}" if b16 else "")
        + ").\n"
    )
    return write_section("lora", "LoRA fine-tuning vs PEFT", body)


if __name__ == "__main__":
    main(**bench_args())
