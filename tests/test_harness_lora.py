"""lm-eval's ``splice`` model on a LoRA run folder: the adapter is rebuilt from the run's config
and its trained weights are loaded, so the harness scores the adapted model, not the base."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
pytest.importorskip("lm_eval")
pytest.importorskip("splice_lora")

from lm_eval.api.instance import Instance
from splice.adapters import has_adapters
from splice.data.tokenizer import CharTokenizer
from splice.harness.model import SpliceLM
from splice.training.experiment import run_experiment

MODEL = {
    "type": "decoder", "vocab_size": 51, "d_model": 32, "n_layers": 1, "max_seq_len": 32,
    "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
}  # fmt: skip


def _logprob(model, ctx: list[int], cont: list[int]) -> float:
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids[:, :-1]).logits.float(), -1)[0]
    return sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))


def test_harness_scores_a_lora_run_with_its_adapter(tmp_path):
    torch.set_num_threads(1)
    config = {
        "name": "lora-harness", "seed": 0, "output_dir": str(tmp_path / "run"), "model": MODEL,
        "adapter": {"type": "lora", "r": 4, "alpha": 8.0, "targets": "q,v"},
        "data": {"task": {"type": "arithmetic", "op": "+", "max_digits": 1}, "max_len": 16},
        "train": {"steps": 6, "batch_size": 8, "checkpoint_every": 6, "progress": False,
                  "precision": "float32", "optimizer": {"lr": 3e-2}},
        "eval": {"loss_batches": 1, "exact_match_examples": 2},
    }  # fmt: skip
    run_experiment(config, overwrite=True)
    lm = SpliceLM(run=str(tmp_path / "run"))
    assert has_adapters(lm.model)

    tok = CharTokenizer()
    pairs = [("1+2=", "3"), ("4+4=", "8"), ("9+0=", "12")]
    got = lm.loglikelihood(
        [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)], disable_tqdm=True
    )
    for (ctx, cont), (score, _) in zip(pairs, got):
        assert score == pytest.approx(
            _logprob(lm.model, tok.encode(ctx), tok.encode(cont)), abs=1e-5
        )
    # the trained adapter changed the model: the base alone scores differently
    from splice.adapters import adapters_disabled

    with adapters_disabled(lm.model):
        base = [_logprob(lm.model, tok.encode(c), tok.encode(x)) for c, x in pairs]
    assert max(abs(b - s) for b, (s, _) in zip(base, got)) > 1e-3
