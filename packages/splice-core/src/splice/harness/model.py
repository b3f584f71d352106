"""``SpliceLM``: a splice model as an lm-evaluation-harness model (``--model splice``).

``model_args``: ``run=DIR`` (a ``splice run`` folder, its newest checkpoint, adapters rebuilt
from its config; or one checkpoint folder) or ``pretrained=DIR`` (a Hugging Face folder read by
``splice.hf``), plus ``dtype`` (default float32), ``device``, ``batch_size``, ``max_length``
(default: the model's ``max_seq_len``), ``max_gen_toks`` and ``add_bos_token``.

Scoring follows lm-eval's ``hf`` model, so the two agree on the same checkpoint: contexts and
continuations are encoded whole then split (``TemplateLM._encode_pair``), an empty context is
the BOS (else EOS) token, sequences longer than ``max_length + 1`` lose tokens on the left,
and ``loglikelihood_rolling`` scores the same disjoint windows.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    Collator,
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from splice.generation.configs import SamplingConfig
from splice.generation.sampling import generate

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_for_harness(
    run: str | None, pretrained: str | None, dtype: str, device: str
) -> tuple[torch.nn.Module, Any]:
    """``(model in eval mode, splice tokenizer)`` from a run/checkpoint or an HF folder."""
    if (run is None) == (pretrained is None):
        raise ValueError(
            "model_args needs exactly one of run=DIR (a splice run or checkpoint folder) or "
            f"pretrained=DIR (a Hugging Face folder); got run={run!r}, pretrained={pretrained!r}"
        )
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if run is not None:
        from splice.evaluation.from_run import load_splice_model

        model, tokenizer, _ = load_splice_model(run)
    else:
        from splice.hf import load_pretrained

        assert pretrained is not None
        model, tokenizer = load_pretrained(pretrained, dtype=dtype)
        if tokenizer is None:
            raise ValueError(f"pretrained={pretrained}: no tokenizer.json in the folder")
    return model.to(device=device, dtype=_DTYPES[dtype]).eval(), tokenizer


def _pick_device(device: str | None) -> torch.device:
    """``device``, else CUDA when present; CUDA asked for where there is none (lm-eval's CLI
    passes ``cuda`` by default) falls back to the CPU with a warning, as lm-eval's ``hf`` does."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        warnings.warn(f"device={device!r} but CUDA is not available: using the CPU", stacklevel=3)
        return torch.device("cpu")
    return torch.device(device)


class SpliceLM(TemplateLM):  # type: ignore[misc]  # lm-eval ships no type hints
    """lm-eval model over a splice ``DecoderLM`` and a splice tokenizer.

    Args:
        run / pretrained: where the model comes from (exactly one; see the module docstring).
        dtype: ``float32`` (default, for parity), ``bfloat16`` or ``float16``.
        device: torch device string (default: CUDA if available, else CPU).
        batch_size: sequences per forward / per ``generate`` call (``"auto"`` means 16).
        max_length: longest input; default the model's ``max_seq_len``.
        max_gen_toks: default generation budget when a task gives none.
        add_bos_token: prepend BOS to every encoded string (as ``hf``'s ``add_bos_token``).
    """

    backend = "causal"

    def __init__(
        self,
        run: str | None = None,
        pretrained: str | None = None,
        *,
        dtype: str = "float32",
        device: str | None = None,
        batch_size: int | str = 16,
        max_batch_size: int | None = None,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        add_bos_token: bool = False,
        **unused: Any,
    ) -> None:
        super().__init__()
        if unused:
            raise ValueError(f"unknown model_args for --model splice: {sorted(unused)}")
        self._device = _pick_device(device)
        self.model, self.splice_tokenizer = load_for_harness(
            run, pretrained, dtype, str(self._device)
        )
        size = 16 if str(batch_size).startswith("auto") else int(batch_size)
        self._batch_size = min(size, max_batch_size) if max_batch_size else size
        limit = getattr(self.model.config, "max_seq_len", None)
        self._max_length = int(max_length or limit or 2048)
        self._max_gen_toks = int(max_gen_toks)
        self.add_bos_token = str(add_bos_token).lower() in ("1", "true")

    # -- what TemplateLM asks for ------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        eos = self.splice_tokenizer.eos_id
        return int(eos if eos is not None else self.splice_tokenizer.pad_id)

    @property
    def prefix_token_id(self) -> int:
        bos = self.splice_tokenizer.bos_id
        return int(bos) if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return type(self.splice_tokenizer).__name__

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **kwargs: Any
    ) -> list[int]:
        bos = self.add_bos_token if add_special_tokens is None else bool(add_special_tokens)
        return list(self.splice_tokenizer.encode(string, bos=bos))

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return str(self.splice_tokenizer.decode(list(tokens)))

    # -- scoring -----------------------------------------------------------------------------
    @torch.no_grad()
    def _score(self, inputs: list[list[int]], conts: list[list[int]]) -> list[tuple[float, bool]]:
        """One right-padded forward over ``inputs`` (each ``<= max_length``): the summed
        log-probability of each continuation (the last ``len(cont)`` positions) and whether
        greedy decoding would have produced it."""
        width = max(map(len, inputs))
        ids = torch.zeros((len(inputs), width), dtype=torch.long)
        for i, row in enumerate(inputs):
            ids[i, : len(row)] = torch.tensor(row)
        # causal attention: right padding cannot change the real positions' logits
        logits = self.model(ids.to(self.device)).logits  # (B, T, V)
        logprobs = F.log_softmax(logits.float(), dim=-1)
        out = []
        for i, (row, cont) in enumerate(zip(inputs, conts)):
            n = len(cont)
            lp = logprobs[i, len(row) - n : len(row)]  # (n, V) predictions of the continuation
            target = torch.tensor(cont, device=lp.device)
            out.append(
                (
                    float(lp.gather(-1, target[:, None]).sum()),
                    bool((lp.argmax(-1) == target).all()),
                )
            )
        return out

    def _loglikelihood_tokens(
        self,
        requests: list[tuple[tuple[str, str], list[int], list[int]]],
        disable_tqdm: bool = False,
        **kwargs: Any,
    ) -> list[tuple[float, bool]]:
        """Score ``(key, context_ids, continuation_ids)`` requests, longest first in batches."""

        def by_length(req: tuple[Any, list[int], list[int]]) -> tuple[int, tuple[int, ...]]:
            toks = req[1] + req[2]
            return -len(toks), tuple(toks)

        order = Collator(requests, sort_fn=by_length)
        results: list[tuple[float, bool]] = []
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="splice loglikelihood")
        for chunk in order.get_batched(n=self.batch_size):
            inputs, conts = [], []
            for _, context, cont in chunk:
                if not context or not cont:
                    raise ValueError("loglikelihood request with an empty context or continuation")
                # the last token is never an input; keep at most max_length inputs (left cut)
                inputs.append((context + cont)[-(self.max_length + 1) :][:-1])
                conts.append(cont)
            scored = self._score(inputs, conts)
            for (key, _, _), answer in zip(chunk, scored):
                results.append(answer)
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, answer)
            bar.update(len(chunk))
        bar.close()
        ordered: list[tuple[float, bool]] = order.get_original(results)
        return ordered

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Total log-likelihood of each whole string, in disjoint ``max_length`` windows."""
        windows: list[tuple[None, list[int], list[int]]] = []
        counts = []
        for (string,) in (req.args for req in requests):
            rolling = get_rolling_token_windows(
                token_list=self.tok_encode(string),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            mine = [(None, *make_disjoint_window(w)) for w in rolling]
            windows += mine
            counts.append(len(mine))
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)  # type: ignore[arg-type]
        totals, start = [], 0
        for req, n in zip(requests, counts):
            total = sum(s for s, _ in scores[start : start + n])
            start += n
            totals.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # -- generation --------------------------------------------------------------------------
    @torch.no_grad()
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, with ``do_sample``/``temperature``) KV-cache generation, cut at
        the first stop string; requests are grouped by their generation kwargs and batched
        longest prompt first."""
        order = Collator(
            [req.args for req in requests],
            sort_fn=lambda r: (-len(self.tok_encode(r[0])), r[0]),
            group_by="gen_kwargs",
            group_fn=lambda r: r[1],
        )
        eos_text = self.splice_tokenizer.decode([self.eot_token_id], skip_special=False)
        out: list[str] = []
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="splice generate_until")
        for chunk in order.get_batched(n=self.batch_size):
            contexts, all_kwargs = zip(*chunk)
            kwargs = normalize_gen_kwargs(dict(all_kwargs[0]), self._max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
            new_tokens = int(kwargs.pop("max_gen_toks"))
            room = self.max_length - new_tokens
            if room <= 0:
                raise ValueError(
                    f"max_gen_toks {new_tokens} leaves no room for a prompt in max_length "
                    f"{self.max_length}"
                )
            prompts = [self.tok_encode(c)[-room:] for c in contexts]
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
            sampling = SamplingConfig(
                max_new_tokens=new_tokens,
                temperature=temperature,
                top_p=kwargs.get("top_p"),
                top_k=kwargs.get("top_k"),
                stop_token_ids=[self.eot_token_id],
                seed=kwargs.get("seed"),
            )
            gen = generate(self.model, prompts, sampling, pad_id=self.splice_tokenizer.pad_id)
            for context, ids in zip(contexts, gen.completions()):
                text = postprocess_generated_text(self.tok_decode(ids), until, None)
                out.append(text)
                self.cache_hook.add_partial("generate_until", (context, all_kwargs[0]), text)
            bar.update(len(chunk))
        bar.close()
        texts: list[str] = order.get_original(out)
        return texts


__all__ = ["SpliceLM", "load_for_harness"]
