"""Generation tokens/s: splice's KV-cache ``generate`` vs transformers ``generate``, same weights.

A tiny random ``LlamaForCausalLM`` is saved with ``save_pretrained`` and loaded into
splice with ``splice.hf.load_model``, so both sides run the *same* weights. Both
decode greedily in float32 with the same thread count: batch 8, 16-token prompts,
128 new tokens (eos disabled on the transformers side and ``min_new_tokens`` set, so
both really generate 128 tokens). Before timing, the benchmark checks that both
produce the same tokens. Candidates alternate round by round in one process.
Target: splice >= 2x transformers.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from harness import bench_args, compare, configure_threads, device, synchronize, write_section

BATCH, PROMPT, NEW = 8, 16, 128
COMPILED = "splice, compile=True"
HF_COMPILED = "transformers, static cache + compile"


@dataclass(frozen=True)
class Size:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int


SIZES = [
    Size("tiny", hidden=128, layers=4, heads=4, kv_heads=2, intermediate=352, vocab=2048),
    Size("small", hidden=512, layers=4, heads=8, kv_heads=4, intermediate=1376, vocab=8192),
]


def build_pair(size: Size) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(transformers model, splice model)`` with identical float32 weights, eval mode."""
    from splice.hf import load_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    hf = LlamaForCausalLM(cfg).eval()
    # No eos: both sides must generate all NEW tokens.
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        splice_model = load_model(folder, dtype=torch.float32)
    return hf.to(device()), splice_model.to(device())


def candidates(
    hf: torch.nn.Module, splice_model: torch.nn.Module, prompts: torch.Tensor
) -> dict[str, Callable[[], torch.Tensor]]:
    from splice.generation.sampling import SamplingConfig, generate

    ids = prompts.tolist()
    mask = torch.ones_like(prompts)
    sampling = SamplingConfig(max_new_tokens=NEW)

    def run_hf() -> torch.Tensor:
        with torch.inference_mode():
            out = hf.generate(
                prompts,
                attention_mask=mask,
                max_new_tokens=NEW,
                min_new_tokens=NEW,
                do_sample=False,
            )
        return out[:, PROMPT:]  # type: ignore[no-any-return]

    def run_splice() -> torch.Tensor:
        return generate(splice_model, ids, sampling, pad_id=0).tokens

    compiled = sampling.model_copy(update={"compile": True})

    def run_compiled() -> torch.Tensor:
        return generate(splice_model, ids, compiled, pad_id=0).tokens

    from transformers import CompileConfig

    # transformers compiles its decode step only with a static cache, and on CPU only when
    # told to (``_compile_all_devices``); "reduce-overhead" means CUDA graphs, so on CPU
    # the default inductor mode is what it can use.
    on_cpu = next(hf.parameters()).device.type == "cpu"
    compile_config = CompileConfig(mode="default" if on_cpu else "reduce-overhead")
    if on_cpu:
        compile_config._compile_all_devices = True

    def run_hf_compiled() -> torch.Tensor:
        with torch.inference_mode():
            out = hf.generate(
                prompts,
                attention_mask=mask,
                max_new_tokens=NEW,
                min_new_tokens=NEW,
                do_sample=False,
                cache_implementation="static",
                compile_config=compile_config,
            )
        return out[:, PROMPT:]  # type: ignore[no-any-return]

    return {
        "transformers": run_hf,
        "splice": run_splice,
        COMPILED: run_compiled,
        HF_COMPILED: run_hf_compiled,
    }


def with_cpu_time(fn: Callable[[], object], log: list[float]) -> Callable[[], object]:
    """``fn`` that also records its process CPU time: on a shared machine, wall time includes
    waiting for a core, CPU time does not (a second, load-robust view of the same runs)."""

    def run() -> object:
        t0 = time.process_time()
        out = fn()
        synchronize()
        log.append(time.process_time() - t0)
        return out

    return run


def measure(size: Size, rounds: int) -> tuple[str, dict[str, float]]:
    hf, splice_model = build_pair(size)
    gen = torch.Generator().manual_seed(1)
    prompts = torch.randint(3, size.vocab, (BATCH, PROMPT), generator=gen).to(device())
    fns = candidates(hf, splice_model, prompts)
    reference = fns["transformers"]()
    t0 = time.perf_counter()
    first_compiled = fns[COMPILED]()  # compiles the decode step for this batch shape
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    first_hf_compiled = fns[HF_COMPILED]()
    hf_compile_s = time.perf_counter() - t0
    outputs = (
        ("splice", fns["splice"]()),
        (COMPILED, first_compiled),
        (HF_COMPILED, first_hf_compiled),
    )
    for name, out in outputs:
        if reference.shape != (BATCH, NEW) or not torch.equal(reference, out):
            same = reference.shape == out.shape
            agree = (reference == out).float().mean().item() if same else 0.0
            raise AssertionError(
                f"{size.name}: {name} greedy tokens differ from transformers "
                f"(shape {tuple(out.shape)}, {agree:.1%} equal)"
            )
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    timed = {name: with_cpu_time(fn, cpu[name]) for name, fn in fns.items()}
    res = compare(timed, baseline="transformers", warmup=1, rounds=rounds)
    tokens = BATCH * NEW
    speedups = {name: res.speedup(name) for name in ("splice", COMPILED, HF_COMPILED)}
    # compiled splice against compiled transformers: the median of per-round time ratios
    speedups["compiled vs compiled"] = statistics.median(
        h / s for h, s in zip(res.samples[HF_COMPILED], res.samples[COMPILED])
    )
    # [1:] drops the warm-up call
    cpu_ms = {name: 1e3 * statistics.median(cpu[name][1:]) / NEW for name in fns}
    params = sum(p.numel() for p in splice_model.parameters())
    row = (
        f"| {size.name} | {size.hidden}×{size.layers}L, {size.heads}/{size.kv_heads} heads, "
        f"vocab {size.vocab} ({params / 1e6:.1f} M) | "
        f"{tokens / res.median('transformers'):,.0f} | {tokens / res.median('splice'):,.0f} | "
        f"**{speedups['splice']:.2f}x** | {tokens / res.median(COMPILED):,.0f} | "
        f"**{speedups[COMPILED]:.2f}x** | {tokens / res.median(HF_COMPILED):,.0f} | "
        f"**{speedups['compiled vs compiled']:.2f}x** | {compile_s:.1f} / {hf_compile_s:.1f} s | "
        + " / ".join(f"{cpu_ms[n]:.2f}" for n in ("transformers", "splice", COMPILED, HF_COMPILED))
        + " |"
    )
    return row, speedups


def main(quick: bool = False) -> str:
    threads = configure_threads()
    rounds = 3 if quick else 15
    lines = [
        "| model | shape | transformers tokens/s | splice tokens/s | splice speedup (wall) "
        f"| {COMPILED} tokens/s | speedup (wall) | {HF_COMPILED} tokens/s "
        "| compiled splice / compiled transformers | first call (compiles): splice / transformers "
        "| CPU ms per step: transformers / splice / compiled / transformers compiled |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    speedups: dict[str, dict[str, float]] = {}
    for size in SIZES:
        row, speedup = measure(size, rounds)
        print(row, flush=True)
        lines.append(row)
        speedups[size.name] = speedup
    eager, compiled = speedups["tiny"]["splice"], speedups["tiny"][COMPILED]
    vs_compiled = speedups["tiny"]["compiled vs compiled"]

    def verdict(x: float) -> str:
        return "meets" if x >= 2.0 else "misses"

    body = "\n".join(lines) + (
        f"\n\nGreedy decoding, float32, {threads} threads on both sides: batch {BATCH}, "
        f"{PROMPT}-token prompts, {NEW} new tokens (eos disabled, `min_new_tokens={NEW}` on the "
        "transformers side). The same random `LlamaForCausalLM` weights, saved with "
        "`save_pretrained` and read by `splice.hf.load_model`; all three produce identical "
        f"tokens (checked before timing). Median of {rounds} alternating rounds after one warm-up "
        "each; a speedup is the median of per-round time ratios against transformers, the CPU "
        "columns are medians of each call's process CPU time (robust to waiting for a core on "
        "a busy machine). `splice` is the default, eager `generate`; "
        f"`{COMPILED}` is `SamplingConfig(compile=True)`: prefill eager, then one "
        "`torch.compile`-d decode step with static shapes (all cache slots attended, unwritten "
        "ones masked), compiled by the first call for a batch shape (its time is in the "
        "column, not in the medians; it is shorter when torch's on-disk compile cache holds "
        "the kernels from an earlier process: about 9 s cold for the tiny model on this "
        "machine) and reused after. `transformers` runs its default eager "
        f"`generate`; `{HF_COMPILED}` is its own compiled path, `cache_implementation="
        '"static"` with a `CompileConfig` (on CPU: inductor default mode, allowed with '
        "`_compile_all_devices`), also compiled by its first call. "
        f"Target: splice >= 2x on the tiny Llama: eager {eager:.2f}x, which "
        f"{verdict(eager)} it; compiled {compiled:.2f}x, which {verdict(compiled)} it. "
        f"Target: compiled splice >= 1.5x compiled transformers on the tiny Llama: "
        f"{vs_compiled:.2f}x, which {'meets' if vs_compiled >= 1.5 else 'misses'} it. "
        "At the larger size the matrix multiplications (identical on both sides) take most "
        "of each step, so the ratio tends to 1. Where the eager time goes (tiny model, counted "
        "separately with a dispatch-level op counter): a splice decode step dispatches 158 "
        "ATen ops, transformers' 265. Inside `generate`, Q/K/V and gate/up run as one matmul "
        "each, RoPE rotates the query and key heads in one call, single projections skip the "
        "module call, and dropout is not called in eval mode. A hand-written step with the "
        "same weights and kernels (no modules) is only ~10-15% faster than eager splice, so "
        "what is left eagerly is the per-op dispatch on batch-8 x 1-token tensors, which the "
        "compiled step removes by fusing the elementwise work."
        + (" (`--quick` run: fewer rounds.)" if quick else "")
    )
    return write_section("generation", "Generation tokens/s (splice vs transformers)", body)


if __name__ == "__main__":
    print(main(**bench_args()))
