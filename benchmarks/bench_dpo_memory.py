"""Peak memory of one DPO step at long sequences: the ``shared_prompt`` layout vs padded rows.

Each (layout, length) runs in a fresh process, so nothing another configuration freed is
reused: a small native decoder and its frozen reference copy, four pairs whose sequences
(prompt + completion + eos) are ``length`` tokens long (prompt ``length / 2``, completions
``length / 2`` and ``length / 2 - 8`` with eos), one warm-up step, then the measured step:
the reference forward, the policy forward, the loss and the backward (float32). Memory is
the process's resident set: the peak (``VmHWM``, reset through ``/proc/self/clear_refs``
just before the step) minus the resident set before it, with glibc's mmap threshold fixed
at 64 KiB (``MALLOC_MMAP_THRESHOLD_``) so every freed tensor goes back to the OS and a
later peak is not hidden by memory the allocator kept. Beside it: the bytes of the
``(R, 1, L, L)`` boolean attention mask the model builds from the batch, and the peak of
building that mask alone.

Linux only (``/proc``). Memory does not depend on the machine's load the way time does,
but the section is still written only by a full run at low load (``harness.write_section``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

D_MODEL, N_LAYERS, N_HEADS, VOCAB, PAIRS = 128, 4, 4, 512, 4
#: candidates: name -> (layout, rows of two documents at most). The second shared_prompt
#: row is the former default capacity (twice the longest document at every length).
CANDIDATES = {
    "padded": ("padded", False),
    "shared_prompt": ("shared_prompt", False),
    "shared_prompt, 2 per row": ("shared_prompt", True),
}
HERE = Path(__file__).resolve().parent


class WordIds:
    """Ids given as text ``"t5 t9 ..."`` (no bos; eos 2, pad 0), as in ``bench_dpo``."""

    pad_id, bos_id, eos_id = 0, None, 2

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids = [int(w[1:]) for w in text.split()]
        return [*ids, self.eos_id] if eos else ids


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> int:
    """Reset the peak resident set to the current one; return it (KiB)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _rss_kib("VmRSS")


def _pairs(length: int) -> list[Any]:
    import torch
    from splice_dpo.data import PreferenceExample

    g = torch.Generator().manual_seed(length)

    def words(k: int) -> str:
        return " ".join(f"t{int(i)}" for i in torch.randint(3, VOCAB, (k,), generator=g))

    half = length // 2
    return [PreferenceExample(words(half), words(half - 1), words(half - 9)) for _ in range(PAIRS)]


def measure(name: str, length: int) -> dict[str, Any]:
    """One configuration, in this process (called in a child process by ``main``)."""
    import torch
    from splice.models.build import build_model
    from splice.nn.masks import build_attention_mask
    from splice_dpo.configs import DPOConfig
    from splice_dpo.data import PreferenceCollator
    from splice_dpo.objective import DPOObjective

    torch.manual_seed(0)
    model = build_model(
        {
            "type": "decoder",
            "vocab_size": VOCAB,
            "d_model": D_MODEL,
            "n_layers": N_LAYERS,
            "max_seq_len": length,
            "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": N_HEADS}},
        }
    ).float()
    objective = DPOObjective(DPOConfig(loss={"type": "sigmoid", "beta": 0.1}, reference="copy"))
    objective.setup(model)
    layout, two_per_row = CANDIDATES[name]
    pairs = _pairs(length)
    row_len = None
    if two_per_row:  # the shared_prompt document: prompt, then both completions + eos
        row_len = 2 * max(len(p.prompt.split()) + len(p.chosen.split()) + len(p.rejected.split())
                          + 3 for p in pairs)  # fmt: skip
    collate = PreferenceCollator(WordIds(), max_len=length, layout=layout, row_len=row_len)  # type: ignore[arg-type]
    batch = collate(pairs)
    rows, width = batch["input_ids"].shape

    def step() -> None:
        model.zero_grad(set_to_none=True)
        objective.loss(model, batch).loss.backward()

    step()  # warm-up: kernels' one-off buffers are not the step's
    model.zero_grad(set_to_none=True)
    base = _reset_peak()
    step()
    step_peak = _rss_kib("VmHWM") - base
    model.zero_grad(set_to_none=True)
    mask_args = {"t": width, "s": width, "causal": True}
    base = _reset_peak()
    mask = build_attention_mask(
        **mask_args,
        key_padding=batch["attention_mask"].bool(),
        doc_ids=batch.get("doc_ids"),
        branch_ids=batch.get("branch_ids"),
    )
    mask_peak = _rss_kib("VmHWM") - base
    return {
        "layout": name,
        "length": length,
        "rows": rows,
        "width": width,
        "tokens": int(batch["attention_mask"].sum()),
        "mask_mib": mask.numel() * mask.element_size() / 2**20,
        "mask_build_peak_mib": mask_peak / 1024,
        "step_peak_mib": step_peak / 1024,
    }


def run_child(name: str, length: int, threads: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": "65536",  # freed tensors go back to the OS at once
        "OMP_NUM_THREADS": str(threads),
    }
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", name, str(length)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{name} at {length} tokens failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(quick: bool = False) -> str:
    sys.path.insert(0, str(HERE))
    from harness import configure_threads, write_section

    threads = configure_threads()
    lengths = (256, 1024) if quick else (256, 1024, 2048)
    rows = []
    for length in lengths:
        for name in CANDIDATES:
            r = run_child(name, length, threads)
            rows.append(r)
            print(
                f"{name:>24} T={length}: {r['rows']} x {r['width']} slots, {r['tokens']} tokens; "
                f"mask {r['mask_mib']:.1f} MiB (built: peak {r['mask_build_peak_mib']:.1f}); "
                f"step peak {r['step_peak_mib']:.1f} MiB",
                flush=True,
            )
    table = [
        "| sequence length | layout | rows x slots (tokens) | bool mask MiB | building it, peak MiB "
        "| step peak MiB |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        table.append(
            f"| {r['length']} | `{r['layout']}` | {r['rows']} x {r['width']} ({r['tokens']:,}) "
            f"| {r['mask_mib']:.1f} | {r['mask_build_peak_mib']:.1f} | {r['step_peak_mib']:.1f} |"
        )
    body = (
        f"Peak memory of one float32 DPO step (sigmoid, reference model: the reference forward, "
        f"the policy forward, loss and backward) on a native decoder (d={D_MODEL}, {N_LAYERS} "
        f"layers, {N_HEADS} heads, vocab {VOCAB}), {PAIRS} pairs whose sequences are the given "
        f"length (prompt half of it), {threads} threads, each configuration in a fresh process: "
        "resident-set peak of the step above the resident set before it (glibc mmap threshold "
        "64 KiB so freed tensors are returned). `bool mask`: the `(R, 1, L, L)` attention mask "
        "the model builds from the batch.\n\n" + "\n".join(table)
    )
    return write_section("dpo-memory", "DPO step peak memory: shared_prompt vs padded", body)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]))), flush=True)
    else:
        from harness import bench_args

        main(**bench_args())
