"""GRPO completions/s: splice's online trainer vs TRL ``GRPOTrainer``, generation included.

Setup (both sides identical): a random tiny ``LlamaForCausalLM`` (d=256, 2 layers, 4 heads,
SwiGLU 688, vocab 4096 untied: 3.7M parameters) saved with ``save_pretrained``, loaded by TRL
from that folder and by splice through ``splice.hf.load_pretrained``; a word-level tokenizer;
8 prompts of 8 random tokens per step, G = 8 completions each (64 per step), exactly 16 new
tokens (sampling at temperature 1, no top-k/top-p; eos is one id in 4096 and is not sampled
in practice), the same Python reward (distinct tokens / 16), group-normalised advantages,
token-level loss ("dapo" in TRL, ``loss_aggregation="token"`` in splice), ε = 0.2, one
update per rollout, AdamW lr 1e-6, clipping at 1.0, float32 (and bf16 autocast where bf16 is
native), the same thread count. Run once
at β = 0 (no reference model) and once at β = 0.04 (a frozen reference copy on both sides).

Timing alternates step by step as in ``bench_sft``: TRL's own ``trainer.train()`` runs and a
callback at each ``on_step_end`` runs one splice ``train_step``; a TRL sample is its whole
step (generation, scoring, reference forward, backward, optimizer, its metrics). The
generation share is the time inside TRL's ``_generate`` and inside splice's ``generate``
calls of that step; the rest is scoring, log-prob forwards and the update. A second
splice trainer, identical but for ``SamplingConfig(compile=True)`` (the compiled
static-cache decode step), runs in the same callback: the two splice rows swap order
every step.
"""

from __future__ import annotations

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
    native,
    not_native_note,
    write_section,
)

D_MODEL, N_LAYERS, N_HEADS, FFN, VOCAB = 256, 2, 4, 688, 4096
PROMPTS, G, PROMPT_LEN, NEW = 8, 8, 8, 16
LR = 1e-6
TRL, SPLICE = "TRL GRPOTrainer", "splice"
SPLICE_COMPILED = "splice, compiled rollouts"
#: splice's candidates: name -> rollout sampling fields (``SamplingConfig``).
VARIANTS: dict[str, dict[str, Any]] = {SPLICE: {}, SPLICE_COMPILED: {"compile": True}}


def build_checkpoint(directory: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        intermediate_size=FFN,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=N_HEADS,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(directory)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    hf_tok.save_pretrained(directory)


def prompts(n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (n, PROMPT_LEN), generator=g)
    return [" ".join(f"t{i}" for i in row.tolist()) for row in ids]


def distinct(prompts: Any, completions: Any, references: Any = None, **kw: Any) -> list[float]:
    """The shared reward: distinct tokens of the completion / 16."""
    return [len(set(str(c).split())) / NEW for c in completions]


class _Timed:
    """Wraps a function; accumulates the seconds spent in it since the last ``take``."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.total = fn, 0.0

    def __call__(self, *a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*a, **kw)
        finally:
            self.total += time.perf_counter() - t0

    def take(self) -> float:
        t, self.total = self.total, 0.0
        return t


def splice_trainer(
    ckpt: Path, beta: float, steps: int, bf16: bool, sampling: dict[str, Any] | None = None
) -> Any:
    from splice.generation.sampling import SamplingConfig
    from splice.hf import load_pretrained
    from splice.registry import get_registry
    from splice.rewards import RewardSet
    from splice.rl.rollout import Rollouts
    from splice.training.configs import OptimizerConfig, TrainConfig
    from splice.training.trainer import Trainer
    from splice_grpo.configs import GRPOConfig
    from splice_grpo.objective import GRPOObjective

    model, tok = load_pretrained(ckpt, dtype=torch.float32)
    assert tok is not None
    cfg = GRPOConfig.model_validate(
        {
            "type": "grpo",
            "group_size": G,
            "beta": beta,
            "loss_aggregation": "token",
            "rewards": [{"reward": {"type": "length_penalty"}}],  # replaced below
        }
    )
    reg = get_registry()
    objective = GRPOObjective(
        cfg,
        RewardSet([("distinct", 1.0, distinct)]),
        reg.build("advantage_estimator", cfg.advantage, None),
        reg.build("policy_loss", cfg.policy_loss, None),
    )
    batches = [
        {
            "prompts": p,
            "references": [""] * PROMPTS,
            "prompt_ids": [tok.encode(x, bos=True) for x in p],
            "index": torch.arange(PROMPTS),
        }
        for p in (prompts(PROMPTS, s) for s in range(steps))
    ]
    rollouts = Rollouts(
        SamplingConfig(max_new_tokens=NEW, temperature=1.0, **(sampling or {})), tok, seed=0
    )
    train = TrainConfig(
        steps=steps,
        max_grad_norm=1.0,
        optimizer=OptimizerConfig(lr=LR, weight_decay=0.0),
        progress=False,
        log_every=1,
        precision="bf16" if bf16 else "float32",  # pinned: "auto" depends on the machine
    )
    return Trainer(model, objective, batches, train, rollouts=rollouts)


def trl_trainer(ckpt: Path, beta: float, steps: int, out: Path, callback: Any, bf16: bool) -> Any:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(ckpt)
    data = Dataset.from_dict({"prompt": [p for s in range(steps) for p in prompts(PROMPTS, s)]})
    args = GRPOConfig(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=PROMPTS * G,
        num_generations=G,
        max_completion_length=NEW,
        temperature=1.0,
        beta=beta,
        loss_type="dapo",
        learning_rate=LR,
        weight_decay=0.0,
        max_grad_norm=1.0,
        lr_scheduler_type="constant",
        use_cpu=not torch.cuda.is_available(),
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        gradient_checkpointing=False,  # TRL's default is True; splice recomputes nothing
        seed=0,
        bf16=bf16,  # autocast to bf16, weights and optimizer state float32 (as splice)
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=distinct,
        args=args,
        train_dataset=data,
        processing_class=tok,
        callbacks=[callback],
    )


def run_beta(
    ckpt: Path, beta: float, *, bf16: bool, warmup: int, rounds: int, out: Path
) -> dict[str, Any]:
    """Alternate TRL and splice steps at one β; per-step seconds and generation seconds."""
    import splice.rl.rollout as rollout_mod
    from transformers import TrainerCallback

    steps = warmup + rounds
    trainers = {
        name: splice_trainer(ckpt, beta, steps + 1, bf16, v) for name, v in VARIANTS.items()
    }
    batches = {name: t.source.batches(0) for name, t in trainers.items()}
    for t in trainers.values():
        t.model.train()
    gen_splice = _Timed(rollout_mod.generate)
    rollout_mod.generate = gen_splice  # type: ignore[assignment]
    samples: dict[str, list[float]] = {TRL: [], **{name: [] for name in VARIANTS}}
    gen: dict[str, list[float]] = {name: [] for name in samples}
    mark = [time.perf_counter()]
    holder: dict[str, Any] = {}

    class Alternate(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            samples[TRL].append(time.perf_counter() - mark[0])
            gen[TRL].append(holder["gen"].take())
            names = list(trainers)
            if len(samples[TRL]) % 2:  # the splice variants swap order every step
                names.reverse()
            for name in names:
                t0 = time.perf_counter()
                trainers[name].train_step(batches[name])
                trainers[name].flush()
                samples[name].append(time.perf_counter() - t0)
                gen[name].append(gen_splice.take())
            mark[0] = time.perf_counter()

    try:
        trl = trl_trainer(ckpt, beta, steps, out, Alternate(), bf16)
        holder["gen"] = _Timed(trl._generate)
        trl._generate = holder["gen"]
        mark[0] = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trl.train()
    finally:
        rollout_mod.generate = gen_splice.fn
    trimmed = {k: v[warmup:] for k, v in samples.items()}
    comp = Comparison(trimmed, baseline=TRL, meta={"warmup": warmup})
    gshare = {k: statistics.median(g / s for g, s in zip(gen[k][warmup:], trimmed[k])) for k in gen}
    return {"comp": comp, "gen_share": gshare, "rounds": len(trimmed[TRL])}


def main(quick: bool = False) -> str:
    threads = configure_threads()
    warmup, rounds = (1, 3) if quick else (2, 12)
    notes, measured = [], []
    results: dict[tuple[str, float], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "llama"
        build_checkpoint(ckpt)
        from transformers import AutoModelForCausalLM

        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(ckpt).parameters())
        for dtype, bf16 in (("float32", False), ("bf16 autocast", True)):
            if bf16 and not native(torch.bfloat16):
                notes.append(not_native_note(dtype))
                continue
            for b in (0.0, 0.04):
                out = Path(tmp) / f"trl-{int(bf16)}-{b}"
                results[(dtype, b)] = run_beta(
                    ckpt, b, bf16=bf16, warmup=warmup, rounds=rounds, out=out
                )
    lines = [
        "| precision | β | candidate | median s / step | completions/s | generation share of "
        "the step | splice speedup (paired median) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for (dtype, beta), r in results.items():
        comp: Comparison = r["comp"]
        for name in comp.samples:
            med = comp.median(name)
            speed = f"{comp.speedup(name):.2f}x" if name != TRL else ""
            lines.append(
                f"| {dtype} | {beta:g} | {name} | {med:.3f} | {PROMPTS * G / med:.1f} "
                f"| {r['gen_share'][name]:.0%} | {speed} |"
            )
        measured.append(
            f"{comp.speedup(SPLICE):.2f}x ({dtype}, β={beta:g}; compiled rollouts "
            f"{comp.speedup(SPLICE_COMPILED):.2f}x)"
        )
    body = (
        f"Tiny Llama ({n_params / 1e6:.1f}M parameters), float32 and (where bf16 is native) "
        f'bf16 autocast (TRL `bf16=True`, splice `precision="bf16"`; weights and optimizer '
        f"state float32 on both), {PROMPTS} prompts x G={G} completions of {NEW} tokens per "
        f"step, {threads} threads, {rounds} alternating rounds after {warmup} warm-up steps "
        "(see `benchmarks/bench_grpo.py` for the setup). `splice, compiled rollouts` is the "
        "same trainer with `SamplingConfig(compile=True)`: its rollouts decode through the "
        "compiled static-cache step (`splice.generation.static`), compiled during the "
        "warm-up steps; the two splice rows swap order every step.\n\n"
        + "\n".join(lines)
        + "".join(f"\n\n{n}" for n in notes)
        + f"\n\nTarget: splice >= 3x at both β. Measured: {', '.join(measured)}. The paired "
        "ratios cancel most load drift, the absolute figures do not."
    )
    return write_section("grpo", "GRPO completions/s vs TRL GRPOTrainer", body)


if __name__ == "__main__":
    main(**bench_args())
