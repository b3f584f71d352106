"""splice models in lm-evaluation-harness: parity with lm-eval's own ``hf`` model.

One tiny random Llama (``splice.testing.hf_folder``) is scored by ``SpliceLM`` (splice's batched
forward and KV-cache ``generate``) and by lm-eval's ``HFLM`` (transformers) on the same requests
and on three local tasks (task YAML + JSONL written here; Hugging Face offline): log-likelihoods
agree to 1e-4, greedy generations exactly, task metrics to 1e-4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

for _key, _value in {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}.items():
    os.environ.setdefault(_key, _value)  # before lm-eval imports datasets / huggingface_hub

pytest.importorskip("transformers")
lm_eval = pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from splice.harness.model import SpliceLM  # noqa: E402
from splice.testing.hf_folder import write_tiny_llama  # noqa: E402

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.mha]  # `nox -s core` deselects
TOL = 1e-4
TEXTS = (
    "The capital of France is Paris. The capital of Italy is Rome. Once upon a time",
    "Zorvan lives in Quellmoor. Tibbet was born in 1872. The river runs north.",
)
MC = [
    {
        "question": "The capital of France is",
        "choices": [" Paris", " Rome", " Quellmoor"],
        "label": 0,
    },
    {"question": "Zorvan lives in", "choices": [" Rome", " Quellmoor"], "label": 1},
    {"question": "Tibbet was born in", "choices": [" 1872", " Paris", " time"], "label": 0},
    {"question": "The river runs", "choices": [" north", " south"], "label": 0},
]
GEN = [
    {"question": "The capital of Italy is", "answer": " Rome"},
    {"question": "Once upon a", "answer": " time"},
    {"question": "Zorvan", "answer": " lives"},
]
PPL = [{"text": t} for t in TEXTS] + [{"text": " ".join(TEXTS) * 3}]  # the last spans windows
TASKS = {
    "tiny_mc": """
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
metric_list:
  - metric: acc
  - metric: acc_norm
""",
    "tiny_gen": """
output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{answer}}"
generation_kwargs:
  until: [".", "\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
""",
    "tiny_ppl": """
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""",
}
DATA = {"tiny_mc": MC, "tiny_gen": GEN, "tiny_ppl": PPL}


def write_tasks(folder: Path, *, lower: bool = False) -> Path:
    """One YAML per task, each naming its JSONL by absolute path (no download, no hub);
    ``lower``: lower-case text, for the character tokenizer of a ``splice run`` folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in TASKS.items():
        data = folder / f"{name}.jsonl"
        lines = [json.dumps(d) for d in DATA[name]]
        data.write_text("".join((x.lower() if lower else x) + "\n" for x in lines))
        head = (
            f"task: {name}\ndataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        )
        (folder / f"{name}.yaml").write_text(head + body.lstrip())
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    # init_std 0.3: peaked logits, so greedy decoding and multiple choice are not near-ties
    return write_tiny_llama(
        tmp_path_factory.mktemp("hf") / "llama", texts=TEXTS, max_seq_len=48, init_std=0.3
    )


@pytest.fixture(scope="module")
def models(checkpoint):
    from lm_eval.models.huggingface import HFLM

    splice_lm = SpliceLM(pretrained=str(checkpoint), batch_size=3)
    hf_lm = HFLM(pretrained=str(checkpoint), dtype="float32", device="cpu", batch_size=3)
    assert hf_lm.max_length == splice_lm.max_length == 48
    return splice_lm, hf_lm


def _requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def test_loglikelihood_matches_hf(models):
    splice_lm, hf_lm = models
    pairs = [(d["question"], c) for d in MC for c in d["choices"]]
    pairs += [("", "Paris is the capital"), ("The capital of France is ", "Paris")]
    pairs += [(" ".join(TEXTS) * 2, " Rome")]  # longer than max_length: cut on the left
    got = splice_lm.loglikelihood(_requests("loglikelihood", pairs), disable_tqdm=True)
    want = hf_lm.loglikelihood(_requests("loglikelihood", pairs), disable_tqdm=True)
    assert len(got) == len(pairs)
    for (g, g_greedy), (w, w_greedy) in zip(got, want):
        assert abs(g - w) <= TOL and g_greedy == w_greedy
    assert max(abs(g) for g, _ in got) > 1.0  # scores far from 0: the comparison means something


def test_loglikelihood_rolling_matches_hf(models):
    splice_lm, hf_lm = models
    texts = [(d["text"],) for d in PPL]
    got = splice_lm.loglikelihood_rolling(_requests("loglikelihood_rolling", texts), True)
    want = hf_lm.loglikelihood_rolling(_requests("loglikelihood_rolling", texts), True)
    assert len(splice_lm.tok_encode(texts[-1][0])) > 2 * splice_lm.max_length  # several windows
    assert got == pytest.approx(want, abs=TOL)


def test_generate_until_matches_hf(models):
    splice_lm, hf_lm = models
    args = [(d["question"], {"until": ["."], "max_gen_toks": 8, "do_sample": False}) for d in GEN]
    args.append(("Once", {"until": ["\n"], "max_gen_toks": 5}))
    got = splice_lm.generate_until(_requests("generate_until", args), disable_tqdm=True)
    want = hf_lm.generate_until(_requests("generate_until", args), disable_tqdm=True)
    assert got == want
    assert any(len(g) > 0 for g in got)


def test_task_metrics_match_hf(models, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    splice_lm, hf_lm = models
    manager = TaskManager(include_path=str(write_tasks(tmp_path)), include_defaults=False)
    results = {}
    for name, lm in (("splice", splice_lm), ("hf", hf_lm)):
        out = simple_evaluate(model=lm, tasks=sorted(TASKS), task_manager=manager, random_seed=0)
        results[name] = out["results"]
    assert set(results["splice"]) == set(TASKS)
    for task, metrics in results["hf"].items():
        numbers = {k: v for k, v in metrics.items() if isinstance(v, float)}
        assert numbers, task
        for key, value in numbers.items():
            # perplexities are exp(-mean log-likelihood): equal log-likelihoods, equal to 1e-6 relative
            want = pytest.approx(value, rel=1e-6, abs=TOL)
            assert results["splice"][task][key] == want, (task, key)
    assert results["splice"]["tiny_mc"]["acc,none"] in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_bad_model_args_name_the_field(checkpoint):
    with pytest.raises(ValueError, match="exactly one of run=DIR"):
        SpliceLM()
    with pytest.raises(ValueError, match="dtype"):
        SpliceLM(pretrained=str(checkpoint), dtype="float64")
    with pytest.raises(ValueError, match=r"unknown model_args.*'temprature'"):
        SpliceLM(pretrained=str(checkpoint), temprature=0.5)


def test_splice_eval_harness_on_a_run_folder(tmp_path, capsys):
    """``splice eval --harness`` on a ``splice run`` folder (character tokenizer, its config's
    model rebuilt, its checkpoint loaded): multiple-choice accuracy equals the argmax of
    log-likelihoods computed here straight from the model."""
    from splice.checkpoint import save_model_weights
    from splice.cli import main
    from splice.data.tokenizer import CharTokenizer
    from splice.models.build import build_model
    from splice.training.configs import ExperimentConfig

    model_cfg = {
        "type": "decoder", "vocab_size": 51, "d_model": 32, "n_layers": 1, "max_seq_len": 64,
        "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}}, "init_std": 0.5,
    }  # fmt: skip
    config = ExperimentConfig.model_validate(
        {"name": "t", "model": model_cfg, "data": {"task": {"type": "arithmetic"}}}
    )
    run = tmp_path / "run"
    (run / "checkpoints" / "step-000001").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config.model_dump(mode="json")))
    torch.manual_seed(5)
    model = build_model(model_cfg).eval()
    save_model_weights(model, run / "checkpoints" / "step-000001" / "model.safetensors")
    tasks = write_tasks(tmp_path / "tasks", lower=True)

    argv = [
        "eval",
        "--run",
        str(run),
        "--harness",
        "tiny_mc,tiny_ppl",
        "--include-path",
        str(tasks),
    ]
    assert main(argv) == 0
    written = json.loads((run / "harness.json").read_text())
    assert set(written["results"]) == {"tiny_mc", "tiny_ppl"}

    tok = CharTokenizer()
    correct = 0
    for doc in MC:
        scores = []
        for choice in doc["choices"]:
            ctx, cont = tok.encode(doc["question"].lower()), tok.encode(choice.lower())
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids[:, :-1]).logits.float(), -1)[0]
            scores.append(sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont)))
        correct += int(max(range(len(scores)), key=scores.__getitem__) == doc["label"])
    assert written["results"]["tiny_mc"]["acc,none"] == pytest.approx(correct / len(MC))


@pytest.mark.slow  # a task neither local nor known: lm-eval indexes its thousands of YAMLs
def test_unknown_harness_task_is_named(checkpoint, tmp_path):
    from splice.harness.evaluate import evaluate_harness

    tasks = write_tasks(tmp_path / "tasks")
    with pytest.raises(ValueError, match=r"unknown lm-eval task\(s\) \['no_such_task'\]"):
        evaluate_harness(["no_such_task"], pretrained=checkpoint, include_path=tasks)


def _offline_env() -> dict[str, str]:
    return {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_lm_eval_cli_runs_model_splice(checkpoint, tmp_path):
    """``lm_eval --model splice`` in a fresh process: lm-eval itself finds the model."""
    tasks = write_tasks(tmp_path / "tasks")
    lm_eval_cli = Path(sys.executable).parent / "lm_eval"
    cmd = [
        str(lm_eval_cli), "--model", "splice", "--model_args", f"pretrained={checkpoint}",
        "--tasks", "tiny_mc", "--include_path", str(tasks), "--output_path", str(tmp_path / "out"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=_offline_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = list((tmp_path / "out").rglob("results*.json"))
    assert len(written) == 1
    result = json.loads(written[0].read_text())
    assert result["config"]["model"] == "splice"
    assert "acc,none" in result["results"]["tiny_mc"]
