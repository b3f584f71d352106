"""bf16 autocast against float32 for one SFT training step, by model width: where ``auto`` stands.

``precision="auto"`` picks bf16 only where the device multiplies bf16 natively and the model's
typical matmul (``splice.training.precision.matmul_width``) is at least ``AUTO_BF16_MIN_WIDTH``
wide. This benchmark measures the rule's ground: a dense decoder (SwiGLU) and an MoE decoder
(8 experts, top-2) at several widths, each SFT step (forward, chunked cross-entropy, backward,
AdamW) timed in float32 and under bf16 autocast, alternating within one process. It reports
the bf16/float32 time ratio, what ``auto`` picks, and whether that pick is the faster one
(within 5%). On a CPU without native bf16 the bf16 rows are not run (emulated: ~100x slower).
"""

from __future__ import annotations

import contextlib

import torch
from harness import (
    bench_args,
    compare,
    configure_threads,
    device,
    native,
    not_native_note,
    write_section,
)

BATCH, SEQ, VOCAB, LAYERS = 8, 128, 512, 2
DENSE_WIDTHS = (32, 64, 128, 256, 384, 512, 768)
MOE_WIDTHS = (64, 128, 256, 512)


def build(width: int, moe: bool) -> torch.nn.Module:
    from splice.models.build import build_model
    from splice.models.configs import DecoderConfig
    from splice.nn.configs import PreNormBlockConfig, RMSNormConfig, SwiGLUConfig
    from splice_mha.configs import MHAConfig

    if moe:
        from splice_moe.configs import MoEConfig

        mixer = MoEConfig(n_experts=8, top_k=2)
    else:
        mixer = SwiGLUConfig()
    block = PreNormBlockConfig(
        token_mixer=MHAConfig(n_heads=max(1, width // 64)),
        channel_mixer=mixer,
        norm=RMSNormConfig(),
    )
    torch.manual_seed(0)
    config = DecoderConfig(
        vocab_size=VOCAB, d_model=width, n_layers=LAYERS, max_seq_len=SEQ, block=block
    )
    return build_model(config).to(device())


def step_fn(model: torch.nn.Module, bf16: bool):
    from splice.objectives.sft import SFTObjective

    objective = SFTObjective()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(3, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device())
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}

    def step() -> None:
        cast = (
            torch.autocast(device().type, dtype=torch.bfloat16)
            if bf16
            else contextlib.nullcontext()
        )
        with cast:
            loss = objective.loss(model, batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main(quick: bool = False) -> None:
    from splice.training.precision import (
        AUTO_BF16_MIN_WIDTH,
        AUTO_BF16_MIN_WIDTH_EXPERTS,
        auto_precision,
        matmul_width,
    )

    threads = configure_threads()
    rounds = 3 if quick else 9
    if not native(torch.bfloat16):
        body = not_native_note("bf16 autocast against float32")
        print(body)
        write_section("precision", "precision=auto: bf16 against float32 by width", body)
        return
    rows = [
        "| model | width (matmul) | float32 ms | bf16 ms | bf16 / float32 | auto picks "
        "| auto not slower than float32 | auto is the faster |",
        "|---|---:|---:|---:|---:|---|---|---|",
    ]
    cases = [("dense", w, False) for w in DENSE_WIDTHS] + [
        ("MoE 8x top-2", w, True) for w in MOE_WIDTHS
    ]
    if quick:
        cases = [c for c in cases if c[1] in (64, 256)]
    wrong = 0
    for name, width, moe in cases:
        fp32_model, bf16_model = build(width, moe), build(width, moe)
        result = compare(
            {"float32": step_fn(fp32_model, False), "bf16": step_fn(bf16_model, True)},
            baseline="float32",
            warmup=2,
            rounds=rounds,
        )
        f32, b16 = result.median("float32"), result.median("bf16")
        pick = auto_precision(device(), fp32_model)
        picked, other = (b16, f32) if pick == "bf16" else (f32, b16)
        ok = picked <= 1.05 * other
        not_slower = picked <= 1.05 * f32
        wrong += not not_slower
        rows.append(
            f"| {name} | {width} ({matmul_width(fp32_model)}) | {1e3 * f32:.1f} | {1e3 * b16:.1f} "
            f"| {b16 / f32:.2f} | {pick} | {'yes' if not_slower else '**no**'} "
            f"| {'yes' if ok else 'no'} |"
        )
        print(rows[-1], flush=True)
    body = "\n".join(
        [
            f"One SFT step (batch {BATCH} x {SEQ} tokens, {LAYERS} layers, vocab {VOCAB}; forward, "
            f"chunked cross-entropy, backward, AdamW), {threads} threads, medians of {rounds} "
            f"alternating rounds. `auto` picks bf16 from a typical matmul width of "
            f"{AUTO_BF16_MIN_WIDTH} (`AUTO_BF16_MIN_WIDTH`), {AUTO_BF16_MIN_WIDTH_EXPERTS} for a "
            "model with batched experts; the last two columns say whether its pick was no slower "
            "than float32, and whether it was the faster of the two (each within 5%).",
            "",
            *rows,
            "",
            f"auto's pick was slower than float32 in {wrong} of {len(cases)} cases.",
        ]
    )
    write_section("precision", "precision=auto: bf16 against float32 by width", body)


if __name__ == "__main__":
    main(**bench_args())
