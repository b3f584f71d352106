"""SFT full fine-tuning tokens/s: splice ``Trainer`` vs TRL ``SFTTrainer``, same weights, same data.

Setup (both sides identical): a random tiny ``LlamaForCausalLM`` (d=512, 4 layers, 8 heads,
SwiGLU 1408, vocab 32000 untied) saved with ``save_pretrained`` and loaded by TRL from that
folder and by splice through ``splice.hf.load_pretrained``; fixed-length synthetic token rows
(no padding), loss on every next token, the same batch size and sequence length, AdamW
(fused, lr 1e-4, no weight decay), gradient clipping at 1.0, the same intra-op thread count.
Run once in float32 and once under bf16 autocast (TRL: ``bf16=True``, which on CPU is
accelerate's ``torch.autocast("cpu", bfloat16)`` -- checked below from the dtype a Linear
produces; splice: ``precision="bf16"``). Weights and optimizer state stay float32 on both sides.

Timing alternates *step by step*: TRL's own ``trainer.train()`` loop runs, and a callback at
each ``on_step_end`` runs one splice ``Trainer.train_step`` (plus its periodic metrics flush).
A TRL sample is the wall time from the end of the previous splice step to TRL's next
``on_step_end`` -- its whole step: data loading, collation, forward, backward, clipping,
optimizer, its per-step metrics. A splice sample is one ``train_step`` (data, forward,
backward, clipping, optimizer) and its flush. Warm-up steps are dropped; medians reported.

Achieved FLOP/s uses the PaLM convention, per token ``6 N + 12 L T d`` with ``N`` the
parameters of every matmul (attention and MLP projections and the LM head; the embedding
lookup is not a matmul) and ``12 L T d`` the attention score and value products (forward and
backward, the causal half not discounted). The fraction is paired: after each round's steps
the same-dtype ``1024 x 1024`` matmul peak is probed (best of 5), each step's FLOP/s is
divided by its round's probe, and the median over rounds is reported. A shared machine's
load drifts within a run, and pairing cancels most of it: with a single peak sample at the
start of the process (what an earlier revision divided by), five runs of one revision gave
0.71-1.36 in bf16, and one gave an impossible 1.03 in float32. The strictest reading,
the median step against the best peak seen anywhere in the run, is printed beside it.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from harness import (
    Comparison,
    bench_args,
    configure_threads,
    matmul_peak,
    measure_matmul,
    native,
    not_native_note,
    synchronize,
    write_section,
)
from harness import device as bench_device

D_MODEL, N_LAYERS, N_HEADS, FFN, VOCAB = 512, 4, 8, 1408, 32000
LR = 1e-4
COMPILED = "splice, train.compile=True"
PLAIN = "plain transformers loop"


def build_checkpoint(directory: Path, *, seq_len: int) -> None:
    """A random Llama and a word-level tokenizer over ``VOCAB`` ids, in HF layout."""
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        intermediate_size=FFN,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=N_HEADS,
        max_position_embeddings=max(512, seq_len),
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(directory)
    vocab = {f"t{i}": i for i in range(VOCAB)}
    vocab["<pad>"], vocab["<s>"], vocab["</s>"] = 0, 1, 2
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    hf_tok.save_pretrained(directory)


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters of every ``nn.Linear`` weight (each one multiply-add per token, forward)."""
    seen: set[int] = set()
    total = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            total += m.weight.numel()
    return total


def flops_per_step(n_matmul: int, *, tokens: int, seq_len: int) -> float:
    """``tokens * (6 N + 12 L T d)``: training FLOPs of one optimizer step (PaLM convention)."""
    return tokens * (6 * n_matmul + 12 * N_LAYERS * seq_len * D_MODEL)


class _Stepper:
    """Drives a splice ``Trainer`` one step at a time, the way ``Trainer.fit`` does."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.batches = trainer.source.batches(0)
        trainer.model.train()

    def __call__(self) -> None:
        t = self.trainer
        t.train_step(self.batches)
        if t.step % t.config.log_every == 0:
            t.flush()


class PlainLoop:
    """A plain transformers training step: forward with labels, backward, clip, fused AdamW.

    The baseline without any trainer's extras (TRL's metrics, its LM-head path): what a
    user writes by hand around ``LlamaForCausalLM``, on the same weights and batches.
    """

    def __init__(self, ckpt: Path, rows: torch.Tensor, *, batch: int, bf16: bool) -> None:
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
        self.model = self.model.to(bench_device()).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, weight_decay=0.0, fused=True)
        self.rows, self.batch, self.bf16, self.i = rows.to(bench_device()), batch, bf16, 0

    def __call__(self) -> None:
        ids = self.rows[self.i : self.i + self.batch]
        self.i = (self.i + self.batch) % self.rows.shape[0]
        with torch.autocast(bench_device().type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def splice_trainer(
    ckpt: Path, rows: torch.Tensor, *, batch: int, precision: str, compile: bool = False
) -> Any:
    from splice.hf import load_pretrained
    from splice.objectives.sft import SFTConfig, SFTObjective
    from splice.training.configs import OptimizerConfig, TrainConfig
    from splice.training.trainer import Trainer

    model, _ = load_pretrained(ckpt, dtype=torch.float32)
    model = model.to(bench_device())
    rows = rows.to(bench_device())
    batches = [
        {"input_ids": rows[i : i + batch], "labels": rows[i : i + batch]}
        for i in range(0, rows.shape[0], batch)
    ]
    cfg = TrainConfig(
        steps=len(batches),
        batch_size=batch,
        max_grad_norm=1.0,
        precision=precision,  # type: ignore[arg-type]
        optimizer=OptimizerConfig(lr=LR, weight_decay=0.0, fused=True),
        progress=False,
        log_every=10,
        compile=compile,
    )
    return Trainer(model, SFTObjective(SFTConfig(chunk_size=None)), batches, cfg)


def trl_trainer(
    ckpt: Path, rows: torch.Tensor, *, batch: int, bf16: bool, out: Path, callback: Any
) -> Any:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(ckpt)
    data = Dataset.from_dict({"input_ids": rows.tolist()})
    args = SFTConfig(
        output_dir=str(out),
        max_steps=rows.shape[0] // batch,
        per_device_train_batch_size=batch,
        learning_rate=LR,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        lr_scheduler_type="constant",
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        max_length=rows.shape[1],
        packing=False,
        gradient_checkpointing=False,  # TRL's default is True; splice recomputes nothing
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    return SFTTrainer(
        model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[callback]
    )


def run_dtype(
    ckpt: Path, rows: torch.Tensor, *, batch: int, bf16: bool, warmup: int, out: Path
) -> tuple[Comparison, dict[str, Any]]:
    """Alternate TRL and splice steps; return per-step seconds and sanity facts."""
    from transformers import TrainerCallback

    precision = "bf16" if bf16 else "float32"
    splice = splice_trainer(ckpt, rows, batch=batch, precision=precision)
    compiled = splice_trainer(ckpt, rows, batch=batch, precision=precision, compile=True)
    steppers: dict[str, Any] = {
        "splice": _Stepper(splice),
        COMPILED: _Stepper(compiled),
        PLAIN: PlainLoop(ckpt, rows, batch=batch, bf16=bf16),
    }
    samples: dict[str, list[float]] = {
        "splice": [],
        COMPILED: [],
        PLAIN: [],
        "TRL SFTTrainer": [],
    }
    facts: dict[str, Any] = {}
    peaks: list[float] = []  # matmul peak probed in each round, next to that round's two steps
    mark = [time.perf_counter()]

    class Alternate(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            synchronize()
            samples["TRL SFTTrainer"].append(time.perf_counter() - mark[0])
            order = list(steppers)  # the other candidates reverse their order every step
            for name in order if state.global_step % 2 else order[::-1]:
                t0 = time.perf_counter()
                steppers[name]()
                synchronize()
                samples[name].append(time.perf_counter() - t0)
            facts["threads"] = torch.get_num_threads()
            peaks.append(1e9 * measure_matmul(torch.bfloat16 if bf16 else torch.float32, repeats=5))
            mark[0] = time.perf_counter()

    trl = trl_trainer(ckpt, rows, batch=batch, bf16=bf16, out=out, callback=Alternate())
    facts["trl_mixed_precision"] = str(trl.accelerator.mixed_precision)
    # Which dtype does a Linear compute in? (autocast -> bfloat16 on both sides when bf16)
    seen: dict[str, torch.dtype] = {}

    def record(side: str) -> Any:
        def hook(module: Any, args: Any, output: torch.Tensor) -> None:
            seen.setdefault(side, output.dtype)

        return hook

    hooks = [
        trl.model.model.layers[0].mlp.up_proj.register_forward_hook(record("trl")),
        splice.model.blocks[0].ffn.up.register_forward_hook(record("splice")),
    ]
    mark[0] = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trl.train()
    for h in hooks:
        h.remove()
    splice.flush()
    compiled.flush()
    facts["compute_dtype"] = {k: str(v).removeprefix("torch.") for k, v in seen.items()}
    facts["param_dtype"] = {
        "trl": str(next(trl.model.parameters()).dtype).removeprefix("torch."),
        "splice": str(next(splice.model.parameters()).dtype).removeprefix("torch."),
    }
    trimmed = {k: v[warmup:] for k, v in samples.items()}
    comp = Comparison(
        trimmed, baseline="TRL SFTTrainer", meta={"warmup": warmup, "peaks": peaks[warmup:]}
    )
    return comp, facts


def vs_plain(comp: Comparison, name: str) -> float:
    """``time(plain loop) / time(name)``, the median of per-round ratios (above 1: faster)."""
    pairs = zip(comp.samples[PLAIN], comp.samples[name])
    return statistics.median(p / x for p, x in pairs)


def check_same_loss(ckpt: Path, rows: torch.Tensor) -> float:
    """Both stacks compute the same float32 loss on the same batch (the benchmark is fair)."""
    from splice.hf import load_pretrained
    from splice.objectives.sft import SFTObjective
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    sp, _ = load_pretrained(ckpt, dtype=torch.float32)
    with torch.no_grad():
        a = hf(input_ids=rows, labels=rows).loss.item()
        b = SFTObjective().loss(sp, {"input_ids": rows, "labels": rows}).loss.item()
    assert abs(a - b) < 1e-4, f"transformers loss {a} != splice loss {b}"
    return abs(a - b)


def main(quick: bool = False) -> str:
    threads = configure_threads()
    batch, seq_len = (4, 256) if quick else (8, 256)
    warmup, rounds = (2, 3) if quick else (2, 10)
    steps = warmup + rounds
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(3, VOCAB, (steps * batch, seq_len), generator=gen)
    tokens = batch * seq_len
    lines = []
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "llama"
        build_checkpoint(ckpt, seq_len=seq_len)
        diff = check_same_loss(ckpt, rows[:2])
        from transformers import AutoModelForCausalLM

        n_matmul = matmul_params(AutoModelForCausalLM.from_pretrained(ckpt))
        flops = flops_per_step(n_matmul, tokens=tokens, seq_len=seq_len)
        for name, bf16 in (("float32", False), ("bf16 autocast", True)):
            if not native(torch.bfloat16 if bf16 else torch.float32):
                lines.append(not_native_note(f"{name} section") + "\n")
                print(f"{name}: not native on this machine; skipped", flush=True)
                continue
            comp, facts = run_dtype(
                ckpt, rows, batch=batch, bf16=bf16, warmup=warmup, out=Path(tmp) / "trl"
            )
            assert facts["threads"] == threads, f"threads changed to {facts['threads']}"
            want = "bfloat16" if bf16 else "float32"
            assert set(facts["compute_dtype"].values()) == {want}, facts
            peak = matmul_peak(torch.bfloat16 if bf16 else torch.float32) * 1e9
            results[name] = (comp, facts, peak)
            print(f"{name}: splice/TRL speedup {comp.speedup('splice'):.2f}x", flush=True)
    fractions: dict[str, dict[str, tuple[float, float]]] = {}
    for name, (comp, facts, peak) in results.items():
        work = {k: float(tokens) for k in comp.samples}
        lines.append(
            f"**{name}** (compute dtype {facts['compute_dtype']['splice']} on both sides;"
            f" TRL accelerate mixed_precision={facts['trl_mixed_precision']};"
            f" parameters {facts['param_dtype']['splice']})\n"
        )
        lines.append(comp.table(work=work, unit_name="tokens/s"))
        peaks = comp.meta["peaks"]
        best_peak = max([peak, *peaks])  # the best matmul throughput seen anywhere in the run
        fractions[name] = {
            k: (
                statistics.median(flops / t / p for t, p in zip(comp.samples[k], peaks)),
                flops / comp.median(k) / best_peak,
            )
            for k in comp.samples
        }
        lines.append(
            "\nAchieved FLOP/s / same-dtype matmul peak, paired: each step against the peak"
            " probed right after its round, median over rounds; in brackets, the median step"
            f" against the best peak seen anywhere in the run ({best_peak / 1e9:.0f} GFLOP/s:"
            " the start-of-run probe or a round's): "
            + ", ".join(f"{k} **{a:.2f}** ({b:.2f})" for k, (a, b) in fractions[name].items())
            + f". Round probes: median {statistics.median(peaks) / 1e9:.0f}, range"
            f" {min(peaks) / 1e9:.0f}-{max(peaks) / 1e9:.0f} GFLOP/s."
            + f" Speedup over TRL (paired median): splice **{comp.speedup('splice'):.2f}x**,"
            f" {COMPILED} **{comp.speedup(COMPILED):.2f}x**."
            + " Against the plain transformers loop (time(plain) / time(x), paired median):"
            f" splice **{vs_plain(comp, 'splice'):.2f}x**, {COMPILED}"
            f" **{vs_plain(comp, COMPILED):.2f}x**, TRL **{vs_plain(comp, 'TRL SFTTrainer'):.2f}x**.\n"
        )

    def target(dtype: str, want: float) -> str:
        if dtype not in results:
            return f"splice >= {want}x the plain loop in {dtype}: not measured (not native here)"
        got = vs_plain(results[dtype][0], "splice")
        return f"splice >= {want}x the plain loop in {dtype} (measured {got:.2f}x)"

    def frac(name: str, dtype: str) -> str:
        if dtype not in fractions:
            return f"{dtype} n/a"
        a, b = fractions[dtype][name]
        return f"{dtype} {a:.2f} ({b:.2f})"

    body = (
        f"Full fine-tuning, tiny Llama (d={D_MODEL}, {N_LAYERS} layers, {N_HEADS} heads, SwiGLU "
        f"{FFN}, vocab {VOCAB}, untied; {n_matmul / 1e6:.1f} M matmul parameters), batch {batch} x "
        f"{seq_len} tokens (no padding, loss on every next token), AdamW fused lr {LR}, clip 1.0, "
        f"{threads} threads. One process, TRL and splice steps alternating; {warmup} warm-up "
        f"steps dropped, medians of {rounds} steps. Both stacks give the same float32 loss on the "
        f"same weights and batch (|diff| = {diff:.1e}). FLOPs per step = tokens x (6 N + 12 L T d)"
        f" = {flops / 1e9:.1f} GFLOP (N = matmul parameters incl. LM head, PaLM convention)."
        " TRL keeps its defaults (its chunked fused LM-head log-probs, per-step entropy and"
        " token-accuracy metrics) except gradient checkpointing, on by default in TRL, which is"
        " turned off because splice does not recompute activations. The third row is splice"
        " with `train.compile=True` (regional `torch.compile` of each block, compiled during"
        " the warm-up steps; TRL stays eager, as by default); the two splice runs swap order"
        " every step.\n\n"
        + f" The fourth row, `{PLAIN}`, is the same model in a hand-written loop (forward with"
        " labels, backward, `clip_grad_norm_`, fused AdamW): it separates what splice does"
        " better from TRL's own per-step extras.\n\n"
        + "\n".join(lines)
        + f"\nTargets: {target('bf16 autocast', 1.2)}; {target('float32', 1.0)};"
        " FLOP fraction >= 0.7, paired (strictest) (splice eager: "
        + ", ".join(frac("splice", d) for d in ("float32", "bf16 autocast"))
        + "; compiled: "
        + ", ".join(frac(COMPILED, d) for d in ("float32", "bf16 autocast"))
        + ")."
    )
    return write_section("sft", "SFT full fine-tuning tokens/s vs TRL SFTTrainer", body)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        print(main(**bench_args()))
