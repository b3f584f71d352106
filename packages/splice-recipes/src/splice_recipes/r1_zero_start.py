"""Recipe ``r1-zero-start``: train ``r1-zero``'s SFT starts, one per seed, and (with
``--set publish=true``) ship them with the package (``splice_recipes.r1_shipped``).

The same SFT run as ``r1-zero --set start=train`` (same config fields, so the main job
accepts what this publishes), without the GRPO arms: it prints each seed's start (greedy
accuracy, the reasoning mode forced open, P(reasoning) at the rollout temperature, the
second skill) and the curve over its steps (the plateau), and records them in the
manifest beside the weights, with the CPU seconds and the machine that trained them.
"""

from __future__ import annotations

from typing import Any, Literal

from splice.recipe import Recipe

from splice_recipes import r1_zero as r1


class R1StartConfig(r1.R1ZeroConfig):
    """``r1-zero``'s start settings; ``publish`` copies the trained starts into the
    package (``splice_recipes/starts/r1-zero``) and writes their manifest."""

    name: str = "r1-zero-start"
    start: Literal["train"] = "train"
    publish: bool = False


def run(config: R1StartConfig) -> dict[str, Any]:
    from splice_recipes.r1_shipped import publish
    from splice_recipes.rl_study import records
    from splice_recipes.study import Clock, map_in_workers
    from splice_recipes.study.machine import environment

    seeds = config.seed_list()
    folders = {s: config.arm_dir(r1.SFT_ARM, s) for s in seeds}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    clock = Clock.start()
    jobs = [(config, r1.SFT_ARM, s, folders[s]) for s in seeds]
    starts = dict(zip(seeds, map_in_workers(r1.run_one, jobs, config.workers)))
    spent = clock.stop()
    curve = r1.sft_curve(config)
    for line in [*r1.start_lines(starts), *r1.sft_lines(curve)]:
        print(line)
    print(f"wall {spent['wall_time_s']:.0f} s, {spent['cpu_time_s']:.0f} CPU s")
    # the figures and curve are printed above (and go to the manifest when published)
    out: dict[str, Any] = {"run_dir": config.run_dir(), **spent}
    if config.publish:
        keys = set(r1.SFT_CURVE_KEYS.values()) | {"step"}
        per_seed = {
            s: {
                "figures": starts[s],
                "curve": [{k: v for k, v in r.items() if k in keys} for r in records(f, "eval")],
            }
            for s, f in folders.items()
        }
        extra = {"trained": {**spent, **environment(config.precision)}}
        target = publish(config, folders, per_seed, folder=r1.starts_folder(config), extra=extra)
        print(f"published {len(seeds)} starts to {target}")
        out["published"] = str(target)
    return out


def config() -> R1StartConfig:
    return R1StartConfig()


recipe = Recipe(
    name="r1-zero-start",
    description="train r1-zero's SFT starts (one per seed) to their plateau; publish=true "
    "ships them with the package for the main job",
    config=config,
    run=run,
)
