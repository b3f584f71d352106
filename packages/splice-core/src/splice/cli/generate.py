"""``splice generate --model PATH --prompt TEXT``: continue a prompt.

``PATH`` is a Hugging Face folder (``config.json`` + safetensors + ``tokenizer.json``), a
``splice run`` folder (its newest intact checkpoint) or one of its checkpoint folders.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("generate", help="generate text from a run, checkpoint or HF folder")
    p.add_argument(
        "--model",
        required=True,
        help="a splice run folder, one of its checkpoints, or a Hugging Face folder "
        "(with tokenizer.json)",
    )
    p.add_argument(
        "--prompt", required=True, action="append", help="prompt text; repeat for a batch"
    )
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--chat",
        action="store_true",
        help="send each prompt as a user message through the tokenizer's chat template",
    )
    p.add_argument("--no-bos", action="store_true", help="do not prepend the BOS token")
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="import code a run's config names even if it is not allow-listed",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from splice.evaluation.from_run import is_splice_folder, load_splice_model
    from splice.generation.sampling import SamplingConfig, generate
    from splice.hf import CheckpointError, load_pretrained

    try:
        tok: Any
        if is_splice_folder(args.model):
            model, tok, _ = load_splice_model(args.model, trust_code=args.trust_code)
        else:
            model, tok = load_pretrained(args.model)
        if tok is None:
            raise FileNotFoundError(f"{args.model}: no tokenizer.json; generate needs a tokenizer")
        if args.chat and not hasattr(tok, "apply_chat_template"):
            raise ValueError(f"{args.model}: its tokenizer has no chat template; drop --chat")
        if args.chat:
            msgs = [[{"role": "user", "content": text}] for text in args.prompt]
            prompts = [tok.apply_chat_template(m, add_generation_prompt=True) for m in msgs]
        else:
            prompts = [tok.encode(text, bos=not args.no_bos) for text in args.prompt]
        sampling = SamplingConfig(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            stop_token_ids=[tok.eos_id] if tok.eos_id is not None else [],
        )
        out = generate(model, prompts, sampling, pad_id=tok.pad_id)
    except (CheckpointError, ValidationError, ValueError, FileNotFoundError) as exc:
        print(f"splice generate: error: {exc}", file=sys.stderr)
        return 2
    for ids in out.completions():
        if ids and ids[-1] == tok.eos_id:
            ids = ids[:-1]  # the stop token is not part of the text
        print(tok.decode(ids))
    return 0
