"""DPO pairs/s: splice (``dpo`` objective + ``Trainer``) vs TRL ``DPOTrainer``, same weights and pairs.

A random tiny Llama is saved in Hugging Face layout and loaded by both stacks (TRL through
transformers, splice through ``splice.hf.load_pretrained``). The pairs are synthetic
word-level token sequences (prompt, chosen, rejected of varied lengths), given to TRL as text
over a word-level tokenizer and to splice as the same token ids through its
``PreferenceCollator``; the benchmark asserts that TRL's tokenization gives exactly those
ids. Two settings, each with both stacks:

* **reference model**: a frozen copy scores every batch (TRL's default for full fine-tuning,
  splice's ``reference="copy"``);
* **precomputed**: reference log-probs computed once before training (TRL
  ``precompute_ref_log_probs=True``, splice ``precompute_reference=True``); not timed.

One process; a TRL callback runs one step of each splice candidate after each TRL step (as
``bench_sft``), so load drift hits all alike; warm-up steps dropped, medians and the paired
ratios reported. splice runs twice: its default layout (pairs packed without padding, each
prompt once for both completions) and the padded rows (one row per sequence) it replaced.
"""

from __future__ import annotations

import dataclasses
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

D_MODEL, N_LAYERS, N_HEADS, FFN, VOCAB = 256, 4, 4, 688, 2000
LR, BETA = 1e-5, 0.1
#: splice's candidates: the default layout (pairs packed without padding, each prompt run
#: once for both completions) and the padded rows it replaced, measured side by side.
LAYOUTS = {"splice": "shared_prompt", "splice, padded rows": "padded"}


class WordIds:
    """splice's tokenizer protocol over the words ``t<id>`` (no BOS; eos 2, pad 0)."""

    pad_id, bos_id, eos_id = 0, None, 2

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids = [int(w[1:]) for w in text.split()]
        return [*ids, self.eos_id] if eos else ids


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
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(directory)
    vocab = {f"t{i}": i for i in range(3, VOCAB)}
    vocab["<pad>"], vocab["<s>"], vocab["</s>"] = 0, 1, 2
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    hf_tok.save_pretrained(directory)


def make_pairs(n: int, seed: int = 0) -> list[Any]:
    """Prompts of 16-48 words, completions of 8-40 words (chosen and rejected differ)."""
    from splice_dpo.data import PreferenceExample

    g = torch.Generator().manual_seed(seed)

    def words(lo: int, hi: int) -> str:
        k = int(torch.randint(lo, hi + 1, (1,), generator=g))
        return " ".join(f"t{int(i)}" for i in torch.randint(3, VOCAB, (k,), generator=g))

    return [
        PreferenceExample(words(16, 48), " " + words(8, 40), " " + words(8, 40)) for _ in range(n)
    ]


class _Stepper:
    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.batches = trainer.source.batches(0)
        trainer.model.train()

    def __call__(self) -> None:
        t = self.trainer
        t.train_step(self.batches)
        if t.step % t.config.log_every == 0:
            t.flush()


def splice_trainer(
    ckpt: Path, pairs: list[Any], *, batch: int, precompute: bool, bf16: bool, layout: str
) -> Any:
    from splice.hf import load_pretrained
    from splice.training.configs import OptimizerConfig, TrainConfig
    from splice.training.trainer import Trainer
    from splice_dpo.configs import DPOConfig
    from splice_dpo.data import PreferenceCollator
    from splice_dpo.objective import DPOObjective
    from splice_dpo.precompute import precompute_reference_logps

    model, _ = load_pretrained(ckpt, dtype=torch.float32)
    collate = PreferenceCollator(WordIds(), max_len=256, layout=layout)
    if precompute:
        table = precompute_reference_logps(model, pairs, collate, batch_size=batch)
        pairs = [
            dataclasses.replace(p, ref_chosen=float(r[0]), ref_rejected=float(r[1]))
            for p, r in zip(pairs, table)
        ]
    batches = [collate(pairs[i : i + batch]) for i in range(0, len(pairs), batch)]
    cfg = TrainConfig(
        steps=len(batches),
        batch_size=batch,
        max_grad_norm=1.0,
        optimizer=OptimizerConfig(lr=LR, weight_decay=0.0, fused=True),
        progress=False,
        log_every=10,
        precision="bf16" if bf16 else "float32",  # pinned: "auto" depends on the machine
    )
    objective = DPOObjective(
        DPOConfig(
            loss={"type": "sigmoid", "beta": BETA},
            reference="copy",
            precompute_reference=precompute,
        )
    )
    trainer = Trainer(model, objective, batches, cfg)
    objective.setup(model)  # what Trainer.fit does first: the reference copy
    return trainer


def trl_trainer(
    ckpt: Path,
    pairs: list[Any],
    *,
    batch: int,
    precompute: bool,
    bf16: bool,
    out: Path,
    callback: Any,
) -> Any:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(ckpt)
    data = Dataset.from_dict(
        {
            "prompt": [p.prompt for p in pairs],
            "chosen": [p.chosen for p in pairs],
            "rejected": [p.rejected for p in pairs],
        }
    )
    args = DPOConfig(
        output_dir=str(out),
        max_steps=len(pairs) // batch,
        per_device_train_batch_size=batch,
        learning_rate=LR,
        beta=BETA,
        loss_type=["sigmoid"],
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        lr_scheduler_type="constant",
        use_cpu=not torch.cuda.is_available(),
        max_length=256,
        precompute_ref_log_probs=precompute,
        precompute_ref_batch_size=batch,
        gradient_checkpointing=False,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
        bf16=bf16,  # autocast to bf16, weights and optimizer state float32 (as splice)
    )
    return DPOTrainer(
        model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[callback]
    )


def check_same_ids(trl: Any, pairs: list[Any]) -> None:
    """TRL tokenized the text into exactly the ids splice trains on."""
    tok = WordIds()
    row = trl.train_dataset[0]
    p = pairs[0]
    assert row["prompt_ids"] == tok.encode(p.prompt), "prompt ids differ"
    assert row["chosen_ids"] == tok.encode(p.chosen, eos=True), "chosen ids differ"
    assert row["rejected_ids"] == tok.encode(p.rejected, eos=True), "rejected ids differ"


def run_setting(
    ckpt: Path,
    pairs: list[Any],
    *,
    batch: int,
    precompute: bool,
    bf16: bool,
    warmup: int,
    out: Path,
) -> Comparison:
    from transformers import TrainerCallback

    splices = {
        name: _Stepper(
            splice_trainer(
                ckpt, pairs, batch=batch, precompute=precompute, bf16=bf16, layout=layout
            )
        )
        for name, layout in LAYOUTS.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in splices}
    samples["TRL DPOTrainer"] = []
    mark = [time.perf_counter()]

    class Alternate(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            samples["TRL DPOTrainer"].append(time.perf_counter() - mark[0])
            names = list(splices)
            if state.global_step % 2:  # the two layouts take turns at running first
                names.reverse()
            for name in names:
                t0 = time.perf_counter()
                splices[name]()
                samples[name].append(time.perf_counter() - t0)
            mark[0] = time.perf_counter()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trl = trl_trainer(
            ckpt,
            pairs,
            batch=batch,
            precompute=precompute,
            bf16=bf16,
            out=out,
            callback=Alternate(),
        )
        check_same_ids(trl, pairs)
        mark[0] = time.perf_counter()
        trl.train()  # precomputation (when on) happens before the first step's mark
    for stepper in splices.values():
        stepper.trainer.flush()
    return Comparison({k: v[warmup:] for k, v in samples.items()}, baseline="TRL DPOTrainer")


def main(quick: bool = False) -> str:
    threads = configure_threads()
    batch = 4 if quick else 8
    warmup, rounds = (2, 3) if quick else (2, 8)
    pairs = make_pairs(batch * (warmup + rounds))
    cap = torch.backends.cpu.get_cpu_capability()
    results: dict[str, Comparison] = {}
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "llama"
        build_checkpoint(ckpt)
        from transformers import AutoModelForCausalLM

        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(ckpt).parameters())
        for dtype, bf16 in (("float32", False), ("bf16 autocast", True)):
            if bf16 and not native(torch.bfloat16):
                lines.append(not_native_note(f"**{dtype}**") + "\n")
                continue
            for setting, precompute in (
                ("reference model", False),
                ("precomputed reference", True),
            ):
                name = f"{dtype}, {setting}"
                comp = run_setting(
                    ckpt,
                    pairs,
                    batch=batch,
                    precompute=precompute,
                    bf16=bf16,
                    warmup=warmup,
                    out=Path(tmp) / name.replace(", ", "-").replace(" ", "_"),
                )
                results[name] = comp
                padded = Comparison(
                    {k: comp.samples[k] for k in LAYOUTS}, baseline="splice, padded rows"
                )
                print(
                    f"{name}: splice/TRL speedup {comp.speedup('splice'):.2f}x "
                    f"(padded rows {comp.speedup('splice, padded rows'):.2f}x; "
                    f"shared-prompt packing / padded {padded.speedup('splice'):.2f}x)",
                    flush=True,
                )
                lines.append(f"**{name}**\n")
                lines.append(comp.table())
                rates = ", ".join(f"{k} {batch / comp.median(k):.3g}" for k in comp.samples)
                lines.append(f"\npairs/s at the median step: {rates}.")
                lines.append(
                    f"\nsplice / TRL (paired median): **{comp.speedup('splice'):.2f}x** "
                    f"(padded rows {comp.speedup('splice, padded rows'):.2f}x; "
                    f"packing with a shared prompt / padded rows {padded.speedup('splice'):.2f}x)\n"
                )
    measured = "; ".join(f"{k} {c.speedup('splice'):.2f}x" for k, c in results.items())
    body = (
        f"DPO (sigmoid, beta {BETA}) full fine-tuning of a random tiny Llama (d={D_MODEL}, "
        f"{N_LAYERS} layers, {N_HEADS} heads, SwiGLU {FFN}, vocab {VOCAB}, untied; "
        f"{n_params / 1e6:.1f} M parameters), in float32 and (where bf16 is native: CPU "
        f'capability {cap}) under bf16 autocast (TRL `bf16=True`, splice `precision="bf16"`; '
        f"weights and optimizer state float32 on both), batch {batch} pairs (prompts 16-48 tokens, "
        f"completions 8-40 + eos, right-padded per batch), AdamW fused lr {LR}, clip 1.0, "
        f"{threads} threads, same weights and token ids on both sides (asserted). One process, "
        f"a splice step after each TRL step; {warmup} warm-up steps dropped, medians of {rounds}. "
        "TRL keeps its defaults (chunked fused LM-head log-probs, per-step entropy/logit "
        "metrics) except gradient checkpointing (off, as in splice). splice runs chosen and "
        "rejected in one forward and projects only completion positions to the vocabulary; "
        "its default layout (`shared_prompt`) packs a batch's pairs into rows without padding, "
        "each pair as its prompt once followed by both completions (branch masks keep them "
        "apart), and the former padded rows (one right-padded row per sequence, "
        '`layout="padded"`) run in the same rounds.\n\n'
        + "\n".join(lines)
        + f"\nTarget: splice >= 2x TRL in every setting. Measured: {measured}. "
        "Absolute times depend on the machine's load; the paired ratios are what to read."
    )
    return write_section("dpo", "DPO pairs/s vs TRL DPOTrainer", body)


if __name__ == "__main__":
    main(**bench_args())
