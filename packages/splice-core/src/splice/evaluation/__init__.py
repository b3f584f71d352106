"""Evaluation: held-out loss/perplexity, exact match, pass@k, and writing results.

- ``evaluate_loss(model, objective, batches)``: token-weighted loss and perplexity.
- ``exact_match(model, tokenizer, examples, sampling)``: greedy completion == answer.
- ``pass_at_k(n, c, k)``: the unbiased estimator of Chen et al. (2021);
  ``evaluate_pass_at_k`` samples ``n`` completions per problem and averages it.
- ``Evaluator``: all of the above on fixed held-out sets, ``evaluator(model) -> {name: value}``
  (the shape the Trainer calls during training and ``splice eval`` calls after it).
- ``write_results(run_dir, results)``: JSON in the run folder, written atomically.
"""

from splice.evaluation.evaluator import Evaluator
from splice.evaluation.exact_match import completion_texts, exact_match
from splice.evaluation.loss import evaluate_loss
from splice.evaluation.pass_at_k import evaluate_pass_at_k, pass_at_k
from splice.evaluation.results import write_results

__all__ = [
    "Evaluator",
    "completion_texts",
    "evaluate_loss",
    "evaluate_pass_at_k",
    "exact_match",
    "pass_at_k",
    "write_results",
]
