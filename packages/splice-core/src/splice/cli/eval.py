"""``splice eval --run RUN | --checkpoint CKPT | --model HF_DIR [--task JSON] [--samples N --k K]``.

Rebuilds the model from the run's config and loads the weights (the run's latest
checkpoint by default), or reads a Hugging Face folder with ``splice.hf``; then
evaluates held-out loss/perplexity, greedy exact match and, with ``--samples``,
pass@k; prints the results as JSON and writes them to ``<folder>/<name>.json``.

``--harness TASKS`` runs lm-evaluation-harness tasks instead (comma-separated names; local task
YAMLs from ``--include-path``) with the model as lm-eval's ``splice`` model, offline, and
writes ``<folder>/harness.json`` (needs ``splice-core[harness]``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("eval", help="evaluate a trained run or checkpoint on held-out data")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", help="a run folder (evaluates its latest checkpoint)")
    where.add_argument("--checkpoint", help="a checkpoint folder or model.safetensors file")
    where.add_argument("--model", help="a Hugging Face folder (with tokenizer.json); needs --task")
    p.add_argument("--config", help="experiment config.json, if not found next to the weights")
    p.add_argument("--task", help='task config as JSON, e.g. \'{"type": "arithmetic", "op": "-"}\'')
    p.add_argument("--examples", type=int, help="exact-match problems (default: config.eval)")
    p.add_argument("--loss-batches", type=int, help="held-out loss batches (default: config.eval)")
    p.add_argument("--samples", type=int, default=0, help="samples per problem for pass@k")
    p.add_argument("--k", type=int, action="append", help="pass@k's k (repeatable; default 1)")
    p.add_argument("--temperature", type=float, default=1.0, help="pass@k sampling temperature")
    p.add_argument("--max-new-tokens", type=int, help="generation budget (default: config.eval)")
    p.add_argument("--batch-size", type=int, help="prompts generated per batch")
    p.add_argument("--harness", metavar="TASKS", help="lm-eval tasks, comma-separated")
    p.add_argument("--include-path", help="--harness: a folder of lm-eval task YAMLs")
    p.add_argument("--limit", type=float, help="--harness: examples per task (or a fraction)")
    p.add_argument("--num-fewshot", type=int, help="--harness: few-shot examples per prompt")
    p.add_argument("--name", help="results file name, without .json (default: eval / harness)")
    p.add_argument("--no-write", action="store_true", help="print only, write no file")
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="import code the run's config names (a callable reward) even if it is not "
        "allow-listed; without it a run folder never imports other code",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.harness:
        return run_harness(args)
    from splice.evaluation import write_results
    from splice.evaluation.from_run import evaluate_run
    from splice.evaluation.results import results_json

    task = None
    if args.task:
        try:
            task = json.loads(args.task)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"--task is not valid JSON ({exc}): {args.task!r}") from None
    ks = args.k or [1]
    if args.samples and max(ks) > args.samples:
        raise SystemExit(f"--k {max(ks)} exceeds --samples {args.samples}; need k <= samples")
    results = evaluate_run(
        run_dir=args.run,
        checkpoint=args.checkpoint,
        model=args.model,
        config_path=args.config,
        task=task,
        examples=args.examples,
        loss_batches=args.loss_batches,
        pass_samples=args.samples,
        ks=ks,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        trust_code=args.trust_code,
    )
    print(results_json(results))  # standard JSON: NaN/inf printed as null
    if not args.no_write:
        folder = Path(args.run or args.checkpoint or args.model)
        if folder.is_file():
            folder = folder.parent
        print(f"wrote {write_results(folder, results, name=args.name or 'eval')}")
    return 0


def run_harness(args: argparse.Namespace) -> int:
    """``--harness``: lm-evaluation-harness tasks on the run, checkpoint or HF folder."""
    from splice.evaluation import write_results
    from splice.evaluation.results import results_json
    from splice.harness.evaluate import evaluate_harness

    tasks = [t.strip() for t in args.harness.split(",") if t.strip()]
    limit = None if args.limit is None else (int(args.limit) if args.limit >= 1 else args.limit)
    results = evaluate_harness(
        tasks,
        run=args.run or args.checkpoint,
        pretrained=args.model,
        include_path=args.include_path,
        limit=limit,
        num_fewshot=args.num_fewshot,
        batch_size=args.batch_size or 16,
    )
    print(results_json(results["results"]))
    if not args.no_write:
        folder = Path(args.run or args.checkpoint or args.model)
        if folder.is_file():
            folder = folder.parent
        print(f"wrote {write_results(folder, results, name=args.name or 'harness')}")
    return 0
