"""QLoRA (NF4) fine-tuning: splice vs PEFT + bitsandbytes on transformers, same tiny Llama.

Setup (both sides identical): a random ``LlamaForCausalLM`` saved with ``save_pretrained``.
splice imports it (``splice.hf.load_pretrained``) and applies its ``qlora`` adapter;
transformers loads it with ``BitsAndBytesConfig(load_in_4bit=True, nf4, double quant,
compute dtype float32)`` and PEFT wraps it (``get_peft_model``). Both: every linear layer
but the output head in NF4 (blocks of 64, double quantization), LoRA r=16 alpha=32 no
dropout on all of them, float32 compute, fixed-length random token rows, loss on every
next token, AdamW (fused) lr 1e-4, gradient clipping at 1.0, the same thread count. The
PEFT side is a plain PyTorch loop (not TRL); the splice side runs ``Trainer.train_step``.

* tokens/s: both sides (and splice without its fused LoRA node, ``lora_common.unfused``)
  alternate step by step in one process (``harness.compare``), at every core and at 1
  thread; medians and paired median ratios are reported, with a one-step op profile.
* peak RSS: each side in its own fresh Python process (``ru_maxrss``) that imports what it
  needs, loads and quantizes the model, and trains the same number of steps; also the
  growth over the process's RSS right after its imports (what the model and training
  added, without the libraries each side imports).
* quantized weight bytes/param: what a saved state dict holds for the quantized linears'
  weights on each side (packed codes, block scales, second-level scales, code tables, JSON).
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from harness import (
    bench_args,
    compare,
    configure_threads,
    native,
    not_native_note,
    write_section,
)
from lora_common import (
    ALPHA,
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

SPLICE, PEFT = "splice QLoRA (NF4)", "PEFT + bitsandbytes QLoRA (plain loop)"
UNFUSED = "splice QLoRA, unfused (autograd path, before)"


def paired(comp: Any, name: str, other: str) -> float:
    """Median over rounds of ``time(name) / time(other)``, both from the same round."""
    return statistics.median(a / b for a, b in zip(comp.samples[name], comp.samples[other]))


def qlora(model: torch.nn.Module, compute: str = "float32") -> None:
    """splice's ``qlora`` adapter: NF4 (blocks of 64, double quant, ``compute`` dtype), all-linear."""
    from splice_qlora.configs import NF4Config, QLoRAConfig
    from splice_qlora.qlora import apply_qlora

    apply_qlora(model, QLoRAConfig(r=R, alpha=ALPHA, dropout=0.0, targets="all-linear",
                                   quantization=NF4Config(compute_dtype=compute)))  # fmt: skip


def qlora_bf16(model: torch.nn.Module) -> None:
    """``qlora`` with bfloat16 compute (the dequantized weights multiply in bf16)."""
    qlora(model, "bfloat16")


def splice_qlora_step(
    ckpt: Path, rows: torch.Tensor, *, batch: int, bf16: bool = False
) -> tuple[SpliceStep, float]:
    """splice ``Trainer`` steps of the ``qlora`` adapter on the CPU (as bitsandbytes' side),
    and the quantized weights' bytes/param. ``bf16``: bf16 compute and autocast."""
    from splice.quantization import quantization_report

    step = SpliceStep(ckpt, rows, batch=batch, adapt=qlora_bf16 if bf16 else qlora,
                      precision="bf16" if bf16 else "float32", on_device=False)  # fmt: skip
    return step, quantization_report(step.model).bytes_per_param


def peft_qlora_step(
    ckpt: Path, rows: torch.Tensor, *, batch: int, bf16: bool = False
) -> tuple[PeftStep, float]:
    """PEFT LoRA on a bitsandbytes-4-bit transformers Llama (CPU) in a plain loop, and the
    quantized weights' bytes/param. ``bf16``: bf16 compute and autocast."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float32,
    )  # fmt: skip
    base = AutoModelForCausalLM.from_pretrained(
        ckpt, quantization_config=q, device_map="cpu", dtype=torch.float32
    )
    bytes_per_param = _bnb_bytes_per_param(base)
    cfg = LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules="all-linear")
    return PeftStep(get_peft_model(base, cfg), rows, batch=batch, bf16=bf16), bytes_per_param


def _bnb_bytes_per_param(model: torch.nn.Module) -> float:
    """Saved bytes per quantized weight, counted as splice counts its own (every state-dict
    tensor of the layer but the bias: codes, scales, code tables, quant-state JSON)."""
    import bitsandbytes as bnb
    from splice.quantization import saved_nbytes

    nbytes = params = 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            params += m.in_features * m.out_features
            nbytes += saved_nbytes(m)
    return nbytes / params


def _rss_now_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def rss_child(side: str, ckpt: str, steps: int, batch: int, seq_len: int) -> None:
    """Run in a fresh process: import, build, train ``steps`` steps, print RSS as JSON."""
    configure_threads()
    if side == "splice":
        import splice_qlora.qlora  # noqa: F401
        from splice.hf import load_pretrained  # noqa: F401
    else:
        import peft  # noqa: F401
        import transformers  # noqa: F401
    after_imports = _rss_now_kib()
    rows = token_rows(batch, seq_len)
    build = splice_qlora_step if side == "splice" else peft_qlora_step
    step, _ = build(Path(ckpt), rows, batch=batch)
    for _ in range(steps):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_kib": peak, "after_imports_kib": after_imports}))


def measure_rss(side: str, ckpt: Path, *, steps: int, batch: int, seq_len: int) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, __file__, "--rss", side, str(ckpt), str(steps), str(batch), str(seq_len)],
        check=True, capture_output=True, text=True, cwd=Path(__file__).parent,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(quick: bool = False) -> str:
    threads = configure_threads()
    batch, seq_len = (4, 128) if quick else (8, 128)
    warmup, rounds = (2, 3) if quick else (2, 8)
    rss_steps = 3 if quick else 6
    rows = token_rows(batch, seq_len)
    tokens = batch * seq_len
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "llama"
        build_checkpoint(ckpt, seq_len=seq_len)
        rss = {s: measure_rss(s, ckpt, steps=rss_steps, batch=batch, seq_len=seq_len)
               for s in ("splice", "peft")}  # fmt: skip
        splice_step, splice_bpp = splice_qlora_step(ckpt, rows, batch=batch)
        peft_step, peft_bpp = peft_qlora_step(ckpt, rows, batch=batch)
        unfused_step = SpliceStep(ckpt, rows, batch=batch, adapt=unfused(qlora), on_device=False)
        cands = {SPLICE: splice_step, PEFT: peft_step, UNFUSED: unfused_step}
        tables, speeds = [], {}
        for n in thread_counts():
            torch.set_num_threads(n)
            comp = compare(cands, baseline=PEFT, warmup=warmup, rounds=rounds)
            speeds[n] = comp.speedup(SPLICE)
            tables.append(
                f"**{n} thread{'s' if n > 1 else ''}**\n\n"
                + comp.table(work={k: float(tokens) for k in comp.samples}, unit_name="tokens/s")
                + f"\n\nsplice QLoRA / PEFT QLoRA tokens/s (paired median): **{speeds[n]:.2f}x**"
                f" (target >= 1.0); fused / unfused step: {paired(comp, SPLICE, UNFUSED):.3f}.\n"
            )
        torch.set_num_threads(threads)
        profile, prof = op_profile(cands)
        if native(torch.bfloat16):  # bf16 compute and autocast on both sides
            bf16 = {
                SPLICE: splice_qlora_step(ckpt, rows, batch=batch, bf16=True)[0],
                PEFT: peft_qlora_step(ckpt, rows, batch=batch, bf16=True)[0],
            }
            comp = compare(bf16, baseline=PEFT, warmup=warmup, rounds=rounds)
            speeds["bf16"] = comp.speedup(SPLICE)
            tables.append(
                f"**bf16 (compute dtype and autocast), {threads} threads**\n\n"
                + comp.table(work={k: float(tokens) for k in comp.samples}, unit_name="tokens/s")
                + f"\n\nsplice QLoRA / PEFT QLoRA tokens/s (paired median): "
                f"**{speeds['bf16']:.2f}x** (target >= 1.0).\n"
            )
        else:
            tables.append(not_native_note("**bf16**") + "\n")
    speed = speeds[threads]
    mib = lambda kib: kib / 1024  # noqa: E731
    rss_rows = "\n".join(
        f"| {name} | {mib(r['peak_kib']):.0f} | {mib(r['after_imports_kib']):.0f} | "
        f"{mib(r['peak_kib'] - r['after_imports_kib']):.0f} |"
        for name, r in (("splice QLoRA", rss["splice"]), ("PEFT + bitsandbytes", rss["peft"]))
    )
    ratio_peak = rss["splice"]["peak_kib"] / rss["peft"]["peak_kib"]
    grow = lambda r: r["peak_kib"] - r["after_imports_kib"]  # noqa: E731
    ratio_grow = grow(rss["splice"]) / grow(rss["peft"])
    body = (
        f"QLoRA fine-tuning, {MODEL_TEXT}, every linear but the head in NF4 (blocks of 64, double "
        f"quantization, float32 compute), LoRA r={R} alpha={ALPHA:g} on all of them, batch "
        f"{batch} x {seq_len} tokens, AdamW fused, on the CPU. PEFT side: transformers "
        "`BitsAndBytesConfig(load_in_4bit=True)` + `get_peft_model`, a plain training loop (not "
        "TRL). The unfused row is splice-lora without its fused LoRA node (bitsandbytes' "
        "`matmul_4bit` for the base, the delta through plain autograd: the path before). The "
        "ratios are paired medians, in float32 at "
        f"{threads} threads and at 1 (see the LoRA section for why both), and with bf16 "
        "compute under bf16 autocast where bf16 is native.\n\n"
        + "\n".join(tables)
        + f"\nProfile of one step ({threads} threads):\n\n{profile}\n\n"
        f"aten ops per step, splice / PEFT: {prof[SPLICE][0] / prof[PEFT][0]:.2f}; fused / "
        f"unfused: {prof[SPLICE][0] / prof[UNFUSED][0]:.2f}; matmul FLOPs splice / PEFT: "
        f"{prof[SPLICE][1] / prof[PEFT][1]:.3f}.\n\n"
        f"Peak RSS, each side alone in a fresh process ({rss_steps} training steps):\n\n"
        "| side | peak RSS MiB | RSS after imports MiB | peak - after imports MiB |\n"
        "|---|---:|---:|---:|\n" + rss_rows + "\n\n"
        f"splice / PEFT peak RSS: **{ratio_peak:.2f}** (target <= 1.0); growth over imports: "
        f"{ratio_grow:.2f}.\n\n"
        f"Quantized weight storage: splice {splice_bpp:.4f} bytes/param, "
        f"PEFT + bitsandbytes {peft_bpp:.4f} bytes/param (what a saved state dict holds per "
        "weight: 4.127 bits = 0.516 of codes and scales, plus each layer's code tables and JSON).\n"
    )
    print(f"splice/PEFT tokens/s {speed:.2f}x, peak RSS ratio {ratio_peak:.2f}", flush=True)
    return write_section("qlora", "QLoRA (NF4): splice vs PEFT + bitsandbytes", body)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--rss":
        side, ckpt, steps, batch, seq_len = sys.argv[2:7]
        rss_child(side, ckpt, int(steps), int(batch), int(seq_len))
    else:
        main(**bench_args())
