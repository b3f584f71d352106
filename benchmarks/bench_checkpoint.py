"""Checkpoint integrity cost: save with vs without the manifest's digests, and load-time checks.

Every checkpoint folder gets a ``manifest.json`` with the size and XXH3-128 digest of each
file, computed after the files are written (they are still in the page cache) and before
the folder is renamed into place (``splice.checkpoint.integrity``). This measures what that
adds to ``CheckpointManager.save`` (the whole save: weights, AdamW moments, RNG, trainer
state, fsync of every file and the folder) on two models:

* the ``addition`` recipe's model (what ``splice run addition`` checkpoints), and
* the SFT benchmark's model (``bench_sft.py``: a random Llama, d=512, 4 layers, vocab 32000
  untied, loaded through ``splice.hf``), with AdamW state after one step.

Saves alternate round by round (with digests / without: the manifest writer replaced by a
no-op), each into a fresh step folder removed outside the timing; medians and the median of
per-round ratios. Load-time verification (``verify_checkpoint``: re-read and hash every
file) is timed beside a plain ``CheckpointManager.load`` without it.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from harness import bench_args, configure_threads, write_section


def arithmetic_model() -> torch.nn.Module:
    from splice.models.build import build_model
    from splice_recipes.addition import experiment

    torch.manual_seed(0)
    return build_model(experiment().model)


def sft_bench_model(folder: Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    from bench_sft import build_checkpoint
    from splice.hf import load_pretrained

    if not (folder / "config.json").is_file():
        build_checkpoint(folder, seq_len=128)
    model, _ = load_pretrained(folder, dtype=dtype)
    return model


def with_adam_state(model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW after one step, so the checkpoint holds both moments like a real one."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opt.step()
    opt.zero_grad(set_to_none=True)
    return opt


def alternate(candidates: dict[str, Callable[[int], float]], rounds: int) -> dict[str, list[float]]:
    """Each round runs every candidate once (order rotating); each returns its own seconds."""
    names = list(candidates)
    samples: dict[str, list[float]] = {n: [] for n in names}
    step = 0
    for r in range(rounds + 1):  # round 0 warms up (page cache, allocator) and is dropped
        for name in names[r % len(names) :] + names[: r % len(names)]:
            step += 1
            seconds = candidates[name](step)
            if r:
                samples[name].append(seconds)
    return samples


def measure(name: str, model: torch.nn.Module, root: Path, rounds: int) -> dict[str, Any]:
    import splice.checkpoint.manager as manager
    from splice.checkpoint import CheckpointManager
    from splice.checkpoint.integrity import verify_checkpoint

    opt = with_adam_state(model)
    mgr = CheckpointManager(root / name)
    real_writer = manager.write_manifest

    def save(digests: bool) -> Callable[[int], float]:
        def run(step: int) -> float:
            manager.write_manifest = real_writer if digests else (lambda *a, **k: None)  # type: ignore[assignment]
            try:
                t0 = time.perf_counter()
                path = mgr.save(step, model=model, optimizer=opt, state={"micro_batches": 0})
                seconds = time.perf_counter() - t0
            finally:
                manager.write_manifest = real_writer
            shutil.rmtree(path)
            return seconds

        return run

    saves = alternate({"with digests": save(True), "without": save(False)}, rounds)
    kept = mgr.save(0, model=model, optimizer=opt, state={"micro_batches": 0})

    def load(step: int) -> float:
        t0 = time.perf_counter()
        mgr.load(kept, model=model, optimizer=opt, verify=False)
        return time.perf_counter() - t0

    def verify(step: int) -> float:
        t0 = time.perf_counter()
        verify_checkpoint(kept)
        return time.perf_counter() - t0

    loads = alternate({"load": load, "verify": verify}, rounds)
    size = sum(p.stat().st_size for p in kept.iterdir())
    shutil.rmtree(kept)
    med = {k: statistics.median(v) for k, v in {**saves, **loads}.items()}
    ratio = statistics.median(a / b for a, b in zip(saves["with digests"], saves["without"]))
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return {"name": name, "params": params, "bytes": size, "med": med, "ratio": ratio}


def main(quick: bool = False) -> str:
    threads = configure_threads()
    rounds = 3 if quick else 9
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results = [measure("arithmetic recipe", arithmetic_model(), root, rounds)]
        results.append(measure("SFT benchmark model", sft_bench_model(root / "hf"), root, rounds))
        bf16 = sft_bench_model(root / "hf", torch.bfloat16)
        results.append(measure("SFT benchmark model, bf16 weights", bf16, root, rounds))
    lines = [
        "| model | params | checkpoint MB | save with digests ms | save without ms "
        "| save with / without (paired median) | verify ms | load ms (unverified) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r["med"]
        row = (
            f"| {r['name']} | {r['params'] / 1e6:.2f} M | {r['bytes'] / 2**20:.1f} "
            f"| {1e3 * m['with digests']:.1f} | {1e3 * m['without']:.1f} | {r['ratio']:.3f} "
            f"| {1e3 * m['verify']:.1f} | {1e3 * m['load']:.1f} |"
        )
        print(row, flush=True)
        lines.append(row)
    body = "\n".join(lines) + (
        "\n\n`CheckpointManager.save` of model + AdamW state (both moments) + RNG + trainer "
        "state, fsync included, with and without the manifest's XXH3-128 digests; medians of "
        f"{rounds} alternating rounds after one warm-up round, {threads} threads. The ratio "
        "column is the median of per-round ratios (both saves of a round ran back to back). "
        "*verify* re-reads and hashes every file of the checkpoint (what a resume does before "
        "loading); *load* is `CheckpointManager.load` without it. bf16: `precision: bf16` "
        "(autocast) keeps float32 weights and optimizer state, so its checkpoints are the "
        "float32 rows'; the bf16 row holds the model in bf16 weights (as "
        "`load_pretrained(..., dtype=torch.bfloat16)` gives it, AdamW moments in bf16 too), "
        "half the bytes." + (" (`--quick` run: fewer rounds.)" if quick else "")
    )
    return write_section("checkpoint", "Checkpoint integrity: digest cost", body)


if __name__ == "__main__":
    main(**bench_args())
