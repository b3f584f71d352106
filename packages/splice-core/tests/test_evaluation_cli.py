"""``splice eval`` on a run folder: rebuilds the model from config.json and loads its checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from splice.checkpoint import save_model_weights
from splice.cli import main
from splice.data.tokenizer import CharTokenizer
from splice.evaluation import exact_match
from splice.generation.sampling import SamplingConfig
from splice.models.build import build_model
from splice.training.configs import ExperimentConfig
from splice.training.stream import derive_seed

pytestmark = [pytest.mark.mha, pytest.mark.usefixtures("one_thread")]


MODEL = {
    "type": "decoder",
    "vocab_size": 51,
    "d_model": 32,
    "n_layers": 1,
    "max_seq_len": 64,
    "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
    "init_std": 0.5,
}


def make_run(tmp_path):
    config = ExperimentConfig.model_validate(
        {
            "name": "t",
            "seed": 3,
            "model": MODEL,
            "data": {"task": {"type": "arithmetic", "op": "+", "max_digits": 1}, "max_len": 16},
            "train": {"steps": 1, "batch_size": 4},
            "eval": {"loss_batches": 2, "exact_match_examples": 6, "max_new_tokens": 3},
        }
    )
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step-000001"
    ckpt.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config.model_dump(mode="json")))
    torch.manual_seed(5)
    model = build_model(MODEL)
    save_model_weights(model, ckpt / "model.safetensors")
    return config, run, model


def test_splice_eval_run_folder_writes_json_matching_direct_evaluation(tmp_path, capsys) -> None:
    config, run, model = make_run(tmp_path)
    argv = ["eval", "--run", str(run), "--samples", "4", "--k", "1", "--k", "4"]
    assert main(argv) == 0
    results = json.loads((run / "eval.json").read_text())
    for key in ("eval_loss", "eval_perplexity", "exact_match", "pass@1", "pass@4"):
        assert key in results, key
    assert results["exact_match_examples"] == 6 and results["loss_batches"] == 2
    assert results["weights"] == str(run)
    assert 0.0 <= results["pass@1"] <= results["pass@4"] <= 1.0
    # the same held-out problems, scored directly with the same weights
    from splice.registry import get_registry

    task = get_registry().build("task", config.data.task, None)
    held_out = task.sample("held_out", 6, seed=derive_seed(3, "em"))
    direct = exact_match(model, CharTokenizer(), held_out, SamplingConfig(max_new_tokens=3))
    assert results["exact_match"] == direct["accuracy"]
    assert '"exact_match"' in capsys.readouterr().out


def test_splice_eval_checkpoint_with_other_task_and_no_write(tmp_path) -> None:
    _, run, _ = make_run(tmp_path)
    ckpt = run / "checkpoints" / "step-000001"
    task = '{"type": "arithmetic", "op": "-", "max_digits": 1}'
    argv = ["eval", "--checkpoint", str(ckpt), "--task", task, "--loss-batches", "0", "--no-write"]
    assert main(argv) == 0
    assert not (ckpt / "eval.json").exists()


def test_splice_eval_hugging_face_folder_needs_a_task_and_uses_its_tokenizer(
    tmp_path, capsys
) -> None:
    from splice.hf import HFTokenizer, save_pretrained
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([f"{a}+{b}={a + b}" for a in range(10) for b in range(10)], trainer)
    tok = HFTokenizer(bpe, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    model = build_model(
        {
            **MODEL,
            "vocab_size": tok.vocab_size,
            "positional": {"type": "rope"},
            "block": {
                "type": "pre_norm",
                "token_mixer": {"type": "mha", "n_heads": 2},
                "channel_mixer": {"type": "swiglu"},
                "norm": {"type": "rmsnorm"},
            },
            "final_norm": {"type": "rmsnorm"},
        }
    )
    folder = tmp_path / "hf"
    save_pretrained(model, folder, tokenizer=tok)
    task = '{"type": "arithmetic", "op": "+", "max_digits": 1}'
    argv = [
        "eval",
        "--model",
        str(folder),
        "--task",
        task,
        "--examples",
        "4",
        "--loss-batches",
        "1",
        "--max-new-tokens",
        "3",
    ]
    assert main(argv) == 0
    results = json.loads((folder / "eval.json").read_text())
    assert results["exact_match_examples"] == 4 and "eval_perplexity" in results
    assert main(["eval", "--model", str(folder), "--no-write"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("splice eval: error: --model needs --task")
