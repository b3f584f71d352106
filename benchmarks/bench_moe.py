"""splice-moe layer, forward + backward, side by side with its yardsticks.

1. Sorted dispatch vs the per-expert-mask loop (``splice_moe.reference``: for each expert a
   boolean mask, ``nonzero``, gather, expert, index-add) on the same layer and weights,
   E = 8, 16, 64 experts, top-2, 4096 tokens. Target: sorted >= 3x.
2. splice's MoE layer vs transformers' ``MixtralSparseMoeBlock`` holding the same weights,
   with transformers' default experts implementation for this machine (``grouped_mm``
   when torch has it, as ``from_pretrained`` picks) and its ``eager`` per-expert loop.
   Target: splice >= 1.5x faster.
3. The MoE layer (top-2 of 8) vs a dense SwiGLU FFN with the same active parameters per
   token (width ``2 * H``). Target: MoE time <= 1.5x dense.
4. A per-phase profile (router, sort, gather, experts, combine, statistics; forward and
   backward) of the layer and of the previous design (``previous_forward``: the same
   sort, a gather with an ``index_add`` backward, the grouped GEMM on the compact layout,
   an ``index_add`` scatter, statistics op by op), E = 8 and 16.

Parts 1-3 run in float32 and, where bf16 is native, again under bf16 autocast (parameters,
inputs and gradients float32, matmuls in bf16: what a training run with ``precision="bf16"``
does, as these rows time a training step). Under autocast splice casts its grouped GEMM's
operands to bf16 (``torch.grouped_mm`` has no autocast rule); transformers' ``grouped_mm``
path casts the input to the *weight* dtype, so with float32 weights its experts stay
float32, while its ``eager`` loop's ``F.linear`` calls autocast to bf16. In bf16 each
candidate is checked against the float32 output within bf16 rounding (relative
``BF16_TOL``, on ``BF16_TOKENS`` of the tokens: transformers' router gate autocasts to bf16,
splice's stays float32, so a few near-tie tokens route differently), in float32 against
each other at ``1e-4``.

Everything runs twice, in two child processes that differ only in the OpenMP wait
policy (``OMP_WAIT_POLICY`` unset = libgomp's spinning default, and ``PASSIVE``): on a
machine shared with other jobs, threads that spin at every barrier of every parallel
kernel steal the cores they wait for, which taxes designs with many small kernels.
Every pair is checked to compute the same numbers first (dense excepted), then timed
alternating round by round; ratios are medians of per-round ratios.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import torch
from harness import (
    bench_args,
    compare,
    configure_threads,
    device,
    native,
    not_native_note,
    write_section,
)
from splice.nn.ffn import SwiGLU
from splice_moe.balancing import load_balancing_loss, router_entropy, router_z_loss
from splice_moe.configs import MoEConfig
from splice_moe.layer import MoELayer
from splice_moe.reference import reference_forward
from torch import Tensor
from torch.profiler import record_function

CHILD = "SPLICE_BENCH_MOE_CHILD"
#: bf16 autocast outputs may differ from float32 by this much of the output's range.
BF16_TOL = 2e-2
#: ... on at least this share of the tokens (see ``check``).
BF16_TOKENS = 0.98
POLICIES = {"spin (default)": None, "passive": "PASSIVE"}
DTYPES = ("float32", "bf16 autocast")


def step(
    forward: Callable[[], Tensor], grad: Tensor, params: list[Tensor], bf16: bool = False
) -> Callable[[], None]:
    """Forward (under bf16 autocast if ``bf16``), backward with a fixed output gradient,
    clear gradients."""

    def run() -> None:
        with torch.autocast(grad.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = forward()
        out.backward(grad.to(out.dtype))
        for p in params:
            p.grad = None

    return run


def autocast_outputs(fwd: dict[str, Callable[[], Tensor]], bf16: bool) -> dict[str, Tensor]:
    """Each candidate's forward output (float32), under bf16 autocast if ``bf16``."""
    with torch.autocast(device().type, dtype=torch.bfloat16, enabled=bf16):
        return {name: f().float() for name, f in fwd.items()}


def previous_forward(layer: MoELayer, x: Tensor) -> Tensor:
    """The layer as it was before the gather-only dispatch (the "before" of the profile).

    ``h[token]`` (an ``index_put`` scatter in the backward), the grouped GEMM on the
    compact layout, ``index_add_`` of the weighted rows, and the statistics computed op
    by op into seven accumulators.
    """
    cfg = layer.config
    h = x.reshape(-1, x.shape[-1])  # (N, D)
    with record_function("moe.router"):
        routing = layer.router(h)
    with record_function("moe.sort"):
        flat = routing.top_idx.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=cfg.n_experts)
        token = order // cfg.top_k
    with record_function("moe.gather"):
        xs = h[token]
    with record_function("moe.experts"):
        ys = layer.experts(xs, counts)
    with record_function("moe.combine"):
        ys = ys * routing.top_weight.reshape(-1)[order][:, None]
        out = ys.new_zeros(h.shape).index_add_(0, token, ys)
    with record_function("moe.stats"), torch.no_grad():
        n = float(h.shape[0])
        new = {
            "routed": counts.float(),
            "dropped": (counts.sum() - counts.sum()).float(),
            "assignments": counts.sum().float(),
            "entropy": router_entropy(routing.scores) * n,
            "lb_loss": load_balancing_loss(routing.scores, counts, normalize=False) * n,
            "z_loss": router_z_loss(routing.logits) * n,
            "tokens": torch.tensor(n),
        }
        acc = layer.__dict__.setdefault("_previous_stats", {})
        for key, value in new.items():
            acc[key] = value if key not in acc else acc[key] + value
    return out.reshape(x.shape)


PHASES = ("router", "sort", "gather", "experts", "combine", "shared", "aux_loss", "stats")


def breakdown(run: Callable[[], None], steps: int) -> tuple[dict[str, tuple[float, float]], float]:
    """Profile ``steps`` calls of ``run``: per-phase (forward ms, backward ms) per step, and the step ms.

    Forward time is each ``moe.<phase>`` scope the layer opens. Backward time is each
    autograd node's evaluation, charged to the scope whose forward op created it (the
    profiler's sequence numbers link the two); nodes created outside the scopes and the
    gradient accumulation land in ``other``.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    events = prof.events()
    fwd: dict[str, float] = {}
    bwd: dict[str, float] = {}
    seq_phase: dict[int, str] = {}
    # A non-differentiable op records the sequence number the next node will take, so the
    # last op (in time) holding a number is the one that created its node.
    for e in sorted(events, key=lambda e: e.time_range.start):
        if e.name.startswith("moe.") and e.cpu_parent is None:
            fwd[e.name[4:]] = fwd.get(e.name[4:], 0.0) + e.cpu_time_total
        if e.sequence_nr >= 0 and not e.name.startswith("autograd::"):
            p = e.cpu_parent
            while p is not None and not p.name.startswith("moe."):
                p = p.cpu_parent
            if p is not None:
                seq_phase[e.sequence_nr] = p.name[4:]
    for e in events:
        if e.name.startswith("autograd::engine::evaluate_function") and e.cpu_parent is None:
            phase = seq_phase.get(e.sequence_nr, "other") if e.sequence_nr >= 0 else "other"
            bwd[phase] = bwd.get(phase, 0.0) + e.cpu_time_total
    tops = [e for e in events if e.cpu_parent is None]
    wall = (max(e.time_range.end for e in tops) - min(e.time_range.start for e in tops)) / steps
    names = [p for p in PHASES if p in fwd or p in bwd] + (["other"] if "other" in bwd else [])
    out = {n: (fwd.get(n, 0.0) / steps / 1e3, bwd.get(n, 0.0) / steps / 1e3) for n in names}
    return out, wall / 1e3


def make_layer(e: int, d: int, h: int, dev: torch.device, **fields: Any) -> MoELayer:
    torch.manual_seed(0)
    layer = MoELayer(MoEConfig(n_experts=e, top_k=2, expert_hidden=h, **fields), d).to(dev)
    with torch.no_grad():  # a trained-looking router: not all tokens on one expert
        layer.router.gate.weight.normal_(0, 0.5)
    return layer


def padded(layer: MoELayer) -> MoELayer:
    """The same layer and weights with the padded one-bmm expert layout allowed (<= 25% rows)."""
    other = MoELayer(layer.config.model_copy(update={"max_padding": 0.25}), layer.d_model)
    other.load_state_dict(layer.state_dict())
    return other.to(next(layer.parameters()).device)


def check(name: str, a: Tensor, b: Tensor, bf16: bool = False) -> None:
    """float32: ``a`` and ``b`` agree to 1e-4. bf16: ``a`` (bf16 autocast) is within
    ``BF16_TOL`` of the range of ``b`` (the float32 output) on at least ``BF16_TOKENS`` of
    the tokens: a router whose gate autocasts to bf16 (transformers') sends a few
    near-tie tokens to another expert, which changes those tokens' outputs entirely."""
    if bf16:
        per_token = (a - b).abs().reshape(-1, a.shape[-1]).amax(-1) / b.abs().max()  # (N,)
        share = (per_token < BF16_TOL).float().mean().item()
        assert share >= BF16_TOKENS, (
            f"{name} (bf16 autocast): only {share:.1%} of tokens within {BF16_TOL} of float32"
        )
        return
    diff = (a - b).abs().max().item()
    assert diff < 1e-4, f"{name}: disagree by {diff}"


def dispatch_rows(n: int, d: int, h: int, rounds: int, bf16: bool = False) -> list[dict[str, Any]]:
    dev = device()
    out = []
    for e in (8, 16, 64):
        layer = make_layer(e, d, h, dev)
        x = torch.randn(1, n, d, device=dev, requires_grad=True)
        grad = torch.randn(1, n, d, device=dev)
        pad = padded(layer)
        params = [x, *layer.parameters(), *pad.parameters()]
        fwd = {
            "mask loop": lambda layer=layer, x=x: reference_forward(layer, x),
            "previous": lambda layer=layer, x=x: previous_forward(layer, x),
            "sorted": lambda layer=layer, x=x: layer(x).hidden,
            "sorted, padded": lambda pad=pad, x=x: pad(x).hidden,
        }
        outs = autocast_outputs(fwd, bf16)
        for name in ("previous", "sorted", "sorted, padded") if not bf16 else fwd:
            ref = fwd["mask loop"]() if bf16 else outs["mask loop"]  # float32 in both cases
            check(f"E={e} {name} vs mask loop", outs[name], ref, bf16)
        res = compare(
            {k: step(f, grad, params, bf16) for k, f in fwd.items()},
            baseline="mask loop",
            warmup=1,
            rounds=rounds,
        )
        out.append(
            {
                "E": e,
                **{k: n / res.median(k) for k in fwd},
                "speedup": res.speedup("sorted"),
                "speedup_padded": res.speedup("sorted, padded"),
                "speedup_previous": res.speedup("previous"),
            }
        )
        print(out[-1], file=sys.stderr, flush=True)
    return out


def hf_rows(n: int, d: int, h: int, rounds: int, bf16: bool = False) -> list[dict[str, Any]]:
    import transformers
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    dev = device()
    layer = make_layer(8, d, h, dev)
    blocks = {}
    for impl in ("grouped_mm", "eager"):
        cfg = transformers.MixtralConfig(
            hidden_size=d, intermediate_size=h, num_local_experts=8, num_experts_per_tok=2
        )
        cfg._experts_implementation = impl
        block = MixtralSparseMoeBlock(cfg).to(dev)
        with torch.no_grad():  # the same weights (layouts match: gate_up = [w1; w3])
            block.gate.weight.copy_(layer.router.gate.weight)
            block.experts.gate_up_proj.copy_(layer.experts.gate_up)
            block.experts.down_proj.copy_(layer.experts.down)
        blocks[impl] = block
    x = torch.randn(1, n, d, device=dev, requires_grad=True)
    grad = torch.randn(1, n, d, device=dev)
    pad = padded(layer)
    fwd = {
        "splice": lambda: layer(x).hidden,
        "splice, padded": lambda: pad(x).hidden,
        "splice (previous design)": lambda: previous_forward(layer, x),
    }
    for impl, block in blocks.items():
        fwd[f"transformers ({impl})"] = lambda block=block: block(x)
    ref = fwd["splice"]()  # float32
    for name, out in autocast_outputs(fwd, bf16).items():
        check(f"{name} vs splice", out, ref, bf16)
    params = [x, *layer.parameters(), *pad.parameters()]
    params += [p for b in blocks.values() for p in b.parameters()]
    # Baseline splice: ratio(name) = time(name) / time(splice) = splice's speed-up over name.
    res = compare(
        {name: step(f, grad, params, bf16) for name, f in fwd.items()},
        baseline="splice",
        warmup=1,
        rounds=rounds,
    )
    return [
        {"name": k, "ms": 1e3 * res.median(k), "tps": n / res.median(k), "ratio": res.ratio(k)}
        for k in fwd
    ]


def dense_rows(n: int, d: int, h: int, rounds: int, bf16: bool = False) -> list[dict[str, Any]]:
    dev = device()
    layer = make_layer(8, d, h, dev)
    torch.manual_seed(1)
    dense = SwiGLU(d, 2 * h).to(dev)  # top-2 experts of width h = one FFN of width 2h
    pad = padded(layer)
    x = torch.randn(1, n, d, device=dev, requires_grad=True)
    grad = torch.randn(1, n, d, device=dev)
    res = compare(
        {
            "dense SwiGLU (2H)": step(lambda: dense(x), grad, [x, *dense.parameters()], bf16),
            "MoE 8 experts top-2 (H)": step(
                lambda: layer(x).hidden, grad, [x, *layer.parameters()], bf16
            ),
            "MoE, padded": step(lambda: pad(x).hidden, grad, [x, *pad.parameters()], bf16),
            "MoE, previous design": step(
                lambda: previous_forward(layer, x), grad, [x, *layer.parameters()], bf16
            ),
        },
        baseline="dense SwiGLU (2H)",
        warmup=1,
        rounds=rounds,
    )
    return [
        {"name": k, "ms": 1e3 * res.median(k), "tps": n / res.median(k), "ratio": res.ratio(k)}
        for k in res.samples
    ]


def profile_rows(n: int, d: int, h: int, steps: int) -> dict[str, Any]:
    dev = device()
    out = {}
    for e in (8, 16):
        layer = make_layer(e, d, h, dev)
        x = torch.randn(1, n, d, device=dev, requires_grad=True)
        grad = torch.randn(1, n, d, device=dev)
        pad = padded(layer)
        params = [x, *layer.parameters(), *pad.parameters()]
        for name, f in (
            ("before", lambda layer=layer, x=x: previous_forward(layer, x)),
            ("after", lambda layer=layer, x=x: layer(x).hidden),
            ("after, padded", lambda pad=pad, x=x: pad(x).hidden),
        ):
            run = step(f, grad, params)
            run()
            phases, wall = breakdown(run, steps)
            out[f"{e}/{name}"] = {"phases": phases, "wall": wall}
    return out


def measure(quick: bool) -> dict[str, Any]:
    """One policy's figures (runs in a child process)."""
    threads = configure_threads()
    n = 1024 if quick else 4096
    d, h = (64, 128) if quick else (128, 256)
    rounds = 3 if quick else 5
    out: dict[str, Any] = {"threads": threads, "n": n, "d": d, "h": h, "rounds": rounds}
    for dtype in DTYPES if native(torch.bfloat16) else DTYPES[:1]:
        bf16 = dtype != "float32"
        out[dtype] = {
            "dispatch": dispatch_rows(n, d, h, rounds, bf16),
            "hf": hf_rows(n, d, h, rounds, bf16),
            "dense": dense_rows(n, d, h, rounds, bf16),
        }
    out["profile"] = profile_rows(n, d, h, 2 if quick else 3)  # float32 only: where time goes
    return out


def run_child(policy: str | None, quick: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    env[CHILD] = "1"
    args = [sys.executable, os.path.abspath(__file__)] + (["--quick"] if quick else [])
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"bench_moe child (OMP_WAIT_POLICY={policy}) failed:\n{done.stderr[-3000:]}"
        )
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def verdict(ok: bool) -> str:
    return "meets" if ok else "misses"


def render(name: str, r: dict[str, Any]) -> list[str]:
    lines = [f"### OpenMP wait policy: {name}", ""]
    for dtype in DTYPES:
        if dtype in r:
            lines += [f"#### {dtype}", "", *render_tables(r[dtype])]
    return lines + render_profile(r)


def render_tables(r: dict[str, Any]) -> list[str]:
    """The dispatch, transformers and dense tables of one dtype."""
    lines = [
        "**Sorted dispatch vs per-expert-mask loop** (same layer, same weights; tokens/s and "
        "speed-up over the mask loop)",
        "",
        "| experts E | mask loop | previous design | sorted (default) | sorted, padded"
        " | speed-up previous | speed-up default | speed-up padded |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["dispatch"]:
        lines.append(
            f"| {row['E']} | {row['mask loop']:,.0f} | {row['previous']:,.0f}"
            f" | {row['sorted']:,.0f} | {row['sorted, padded']:,.0f}"
            f" | {row['speedup_previous']:.2f}x | **{row['speedup']:.2f}x**"
            f" | {row['speedup_padded']:.2f}x |"
        )
    worst = min(row["speedup"] for row in r["dispatch"])
    worst_pad = min(row["speedup_padded"] for row in r["dispatch"])
    lines += [
        "",
        f"Target >= 3x: worst {worst:.2f}x with the default layout ({verdict(worst >= 3)} it), "
        f"{worst_pad:.2f}x padded ({verdict(worst_pad >= 3)} it).",
        "",
        "**splice vs transformers' `MixtralSparseMoeBlock`** (E=8, same weights)",
        "",
        "| candidate | median ms | tokens/s | time / splice (default) |",
        "|---|---:|---:|---:|",
    ]
    for row in r["hf"]:
        lines.append(
            f"| {row['name']} | {row['ms']:.1f} | {row['tps']:,.0f} | {row['ratio']:.2f}x |"
        )
    hf = {row["name"]: row["ratio"] for row in r["hf"]}
    parts = []
    for impl in ("grouped_mm", "eager"):
        t = hf[f"transformers ({impl})"]
        tp = t / hf["splice, padded"]
        parts.append(
            f"vs {impl}: {t:.2f}x default ({verdict(t >= 1.5)} it), {tp:.2f}x padded "
            f"({verdict(tp >= 1.5)} it)"
        )
    lines += [
        "",
        "Target splice >= 1.5x faster: " + "; ".join(parts) + ". transformers picks `grouped_mm`"
        " on this torch by default.",
        "",
        "**MoE layer vs dense SwiGLU with the same active parameters** (E=8, top-2)",
        "",
        "| candidate | median ms | tokens/s | time / dense |",
        "|---|---:|---:|---:|",
    ]
    for row in r["dense"]:
        lines.append(
            f"| {row['name']} | {row['ms']:.1f} | {row['tps']:,.0f} | {row['ratio']:.2f}x |"
        )
    moe, moe_pad = r["dense"][1]["ratio"], r["dense"][2]["ratio"]
    lines += [
        "",
        f"Target MoE <= 1.5x dense: {moe:.2f}x default ({verdict(moe <= 1.5)} it), "
        f"{moe_pad:.2f}x padded ({verdict(moe_pad <= 1.5)} it).",
        "",
    ]
    return lines


def render_profile(r: dict[str, Any]) -> list[str]:
    """The per-phase profile tables (float32)."""
    lines = [
        "**Where a step goes** (float32; torch.profiler, ms per forward+backward step; the "
        "backward is charged to the phase whose forward op made the autograd node; before = "
        "previous design)",
        "",
    ]
    sides = ("before", "after", "after, padded")
    for e in (8, 16):
        runs = [r["profile"][f"{e}/{side}"] for side in sides]
        lines += [
            f"E={e}: step "
            + ", ".join(f"{run['wall']:.0f} ms {side}" for side, run in zip(sides, runs))
            + ".",
            "",
            "| phase | " + " | ".join(f"{side} fwd / bwd (share)" for side in sides) + " |",
            "|---|---:|---:|---:|",
        ]
        seen = {p for run in runs for p in run["phases"]}
        for p in [p for p in (*PHASES, "other") if p in seen]:
            cells = []
            for run in runs:
                f, b = run["phases"].get(p, (0.0, 0.0))
                cells.append(f"{f:.1f} / {b:.1f} ({100 * (f + b) / run['wall']:.0f}%)")
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def main(quick: bool = False) -> str:
    if os.environ.get(CHILD):
        result = measure(quick)
        print("RESULT " + json.dumps(result), flush=True)
        return ""
    threads = configure_threads()
    results = {name: run_child(policy, quick) for name, policy in POLICIES.items()}
    first = next(iter(results.values()))
    cap = torch.backends.cpu.get_cpu_capability()
    bf16_note = (
        "; again under bf16 autocast (parameters and gradients float32, matmuls in bf16, as "
        'a `precision="bf16"` training step: splice casts its grouped GEMM\'s operands to '
        "bf16, transformers' `grouped_mm` path casts the input to its float32 weights and "
        "so stays float32, its `eager` loop's linears autocast to bf16; each bf16 output is "
        f"checked against float32 within {BF16_TOL} of its range on at least "
        f"{BF16_TOKENS:.0%} of the tokens: transformers' router gate autocasts to bf16, "
        "splice's stays float32, so a few near-tie tokens pick other experts there)"
        if native(torch.bfloat16)
        else ""
    )
    body = [
        f"Forward + backward (input and parameter gradients), float32{bf16_note}, "
        f"{first['n']} tokens, "
        f"D={first['d']}, expert width H={first['h']}, SwiGLU experts, top-2, dropless, "
        f"training mode (splice also accumulates its routing statistics; the mask loop and "
        f"transformers compute none); {threads} threads, CPU capability {cap}; median of "
        f"{first['rounds']} alternating rounds after 1 warm-up step, in two child processes "
        "that differ only in `OMP_WAIT_POLICY`. The machine was shared with other jobs: "
        "read the ratios, not the absolute rates."
        + (" (`--quick` run: smaller shapes, fewer rounds.)" if quick else ""),
        "",
    ]
    if not native(torch.bfloat16):
        body += [not_native_note("bf16 autocast rows"), ""]
    for name, r in results.items():
        body += render(name, r)
    return write_section("moe", "Mixture of experts (splice-moe)", "\n".join(body).rstrip())


if __name__ == "__main__":
    out = main(**bench_args())
    if not os.environ.get(CHILD):
        print(out)
