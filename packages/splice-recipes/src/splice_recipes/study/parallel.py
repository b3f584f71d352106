"""Seeds in worker processes: a study's runs of one seed depend only on that seed, so the
seeds can run at once, one process each, and the figures are the same as a sequential
study's. Recipes whose runs use one thread each (tiny matmuls gain nothing from a second)
leave a core idle when they run seed after seed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

Figures = dict[str, float]
RunSeed = Callable[[Any, int], dict[str, Figures]]
_R = TypeVar("_R")


def check_sendable(fn: Callable[..., Any]) -> None:
    """Raise ``ValueError`` naming ``fn`` unless it can be sent to a spawned worker.

    Sending pickles ``fn``; pickling a function stores only its module and qualified name
    and checks that they find the same object, so a lambda, a nested function or a
    ``functools.partial`` of one (or of an unpicklable argument) fails here, in the parent,
    with the function's name, instead of inside the pool. Nothing is unpickled.
    """
    import pickle

    try:
        pickle.dumps(fn)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        name = getattr(getattr(fn, "func", fn), "__qualname__", repr(fn))
        raise ValueError(
            f"{name} cannot be sent to a worker process: it must be a module-level function "
            f"(or a functools.partial of one with picklable arguments) ({err})"
        ) from err


def map_in_workers(fn: Callable[..., _R], jobs: list[tuple[Any, ...]], workers: int) -> list[_R]:
    """``[fn(*job) for job in jobs]``, in order, in up to ``workers`` processes (in this
    process when ``workers`` is 1 or there is one job): independent runs, such as a study's
    seeds or its dev-split candidates, at once.

    ``fn`` must be a module-level function (or a ``functools.partial`` of one): it is sent to
    the worker processes, which are started with ``spawn`` (a fresh interpreter, no forked
    torch state). The workers are waited for, so their CPU seconds reach the study's ``Clock``.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if workers <= 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    check_sendable(fn)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        return list(pool.map(fn, *zip(*jobs)))


def run_seeds(
    run_seed: RunSeed, config: Any, seeds: list[int], workers: int
) -> dict[int, dict[str, Figures]]:
    """``{seed: {arm: figures}}`` from ``run_seed(config, seed)`` (every arm of one seed, in
    order), one seed per process in up to ``workers`` processes; ``{}`` when ``workers`` is
    1 (the study then runs the seeds itself, one after another).

    ``run_seed`` must be a module-level function: it is sent to the worker processes, which
    are started with ``spawn`` (a fresh interpreter, no forked torch state).
    """
    if workers <= 1 or len(seeds) <= 1:
        return {}
    return dict(zip(seeds, map_in_workers(run_seed, [(config, s) for s in seeds], workers)))


def _arm_job(
    run_one: Callable[[Any, str, int, Path], Figures], config: Any, arm: str, seed: int
) -> Figures:
    """``run_one`` of one arm and seed in ``config.arm_dir(arm, seed)``, made first."""
    folder = config.arm_dir(arm, seed)
    folder.mkdir(parents=True, exist_ok=True)
    return run_one(config, arm, seed, folder)


def every_arm(
    run_one: Callable[[Any, str, int, Path], Figures],
    arms_of: Callable[[Any], list[str]],
    config: Any,
    seed: int,
) -> dict[str, Figures]:
    """Every arm of one seed, in ``arms_of(config)`` order (a start before the arms that read
    it): ``{arm: figures}``, each run in ``config.arm_dir(arm, seed)``. A recipe's
    ``run_seed`` is ``functools.partial(every_arm, run_one, arms_of)`` (module-level
    functions, so the partial reaches the worker processes)."""
    return {arm: _arm_job(run_one, config, arm, seed) for arm in arms_of(config)}


def arms_after_start(
    run_one: Callable[[Any, str, int, Path], Figures],
    config: Any,
    arms: list[str],
    seeds: list[int],
    workers: int,
) -> dict[int, dict[str, Figures]]:
    """``{seed: {arm: figures}}``, each ``run_one(config, arm, seed, folder)`` a job of its
    own in up to ``workers`` processes: every seed's start (``arms[0]``) first, and each of
    its other arms as soon as that seed's start is done.

    One process per *seed* leaves a core idle while the last seeds run alone (5 seeds on 2
    workers: a third round with one); one job per *arm* keeps every worker busy to the end.
    A run's figures depend only on its arm and seed, so they equal the sequential study's.
    ``run_one`` must be a module-level function (it is sent to spawned workers).
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    if workers <= 1:
        return {s: {arm: _arm_job(run_one, config, arm, s) for arm in arms} for s in seeds}
    out: dict[int, dict[str, Figures]] = {s: {} for s in seeds}
    check_sendable(run_one)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending = {pool.submit(_arm_job, run_one, config, arms[0], s): (arms[0], s) for s in seeds}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                arm, seed = pending.pop(future)
                out[seed][arm] = future.result()
                if arm == arms[0]:  # the seed's start is written: its arms can run
                    for later in arms[1:]:
                        job = pool.submit(_arm_job, run_one, config, later, seed)
                        pending[job] = (later, seed)
    return {s: {arm: out[s][arm] for arm in arms} for s in seeds}


def seeds_in_workers(
    run_seed: RunSeed, config: Any, run_one: Callable[[str, int, Path], Figures]
) -> Callable[[str, int, Path], Figures]:
    """A ``run_one(arm, seed, folder)`` for ``run_study`` whose first call runs every seed in
    ``config.workers`` processes (inside the study's clock, so its wall and CPU seconds count
    them) and whose calls then return those figures; with one worker it is ``run_one``."""
    done: dict[int, dict[str, Figures]] = {}

    def one(arm: str, seed: int, folder: Path) -> Figures:
        if not done and config.workers > 1:
            done.update(run_seeds(run_seed, config, config.seed_list(), config.workers))
        return done[seed][arm] if seed in done else run_one(arm, seed, folder)

    return one


def arms_in_workers(
    run_one: Callable[[Any, str, int, Path], Figures], config: Any
) -> Callable[[str, int, Path], Figures]:
    """A ``run_one(arm, seed, folder)`` for ``run_study`` whose first call runs every arm of
    every seed through :func:`arms_after_start` in ``config.workers`` processes (inside the
    study's clock) and whose calls then return those figures; with one worker it calls
    ``run_one(config, arm, seed, folder)`` itself. ``config.arms()[0]`` is the start the
    other arms read."""
    done: dict[int, dict[str, Figures]] = {}

    def one(arm: str, seed: int, folder: Path) -> Figures:
        if config.workers <= 1:
            return run_one(config, arm, seed, folder)
        if not done:
            done.update(
                arms_after_start(run_one, config, config.arms(), config.seed_list(), config.workers)
            )
        return done[seed][arm]

    return one
