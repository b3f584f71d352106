"""The statistical bar of a study: paired differences over seeds, a Student-t interval on
their mean, and a verdict that reads "shown" only when the interval excludes zero in the
claimed direction.

Pure Python (no scipy): the t quantile comes from the regularized incomplete beta function
(a continued fraction, Numerical Recipes' ``betacf``) inverted by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

Direction = Literal["higher", "lower"]
SHOWN, NOT_SHOWN = "shown", "not shown"
METHOD = "Student t"


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (``t_quantile(0.975, 2) == 4.3027``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with its two-sided ``confidence`` interval ``[low, high]``.

    With fewer than two values there is no interval: ``low``/``high`` are ``-inf``/``inf``
    (written as ``null`` in JSON).
    """

    mean: float
    low: float
    high: float
    n: int
    sd: float
    confidence: float = 0.95
    method: str = METHOD

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def to_json(self) -> dict[str, Any]:
        return {
            k: (v if not isinstance(v, float) or math.isfinite(v) else None)
            for k, v in asdict(self).items()
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Interval:
        d = dict(data)
        d["low"] = -math.inf if d.get("low") is None else d["low"]
        d["high"] = math.inf if d.get("high") is None else d["high"]
        d["sd"] = math.nan if d.get("sd") is None else d["sd"]
        return cls(**d)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of ``values`` and its Student-t interval: ``mean +- t * sd / sqrt(n)`` with
    ``t`` the ``(1 + confidence) / 2`` quantile at ``n - 1`` degrees of freedom.

    Raises:
        ValueError: no values, a non-finite value, or ``confidence`` outside (0, 1).
    """
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("t_interval needs at least one value")
    if not all(math.isfinite(x) for x in xs):
        raise ValueError(f"t_interval: non-finite value in {xs}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return Interval(mean, -math.inf, math.inf, n, math.nan, confidence)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile((1.0 + confidence) / 2.0, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd, confidence)


def paired_differences(arm: Sequence[float], baseline: Sequence[float] | float) -> list[float]:
    """``arm[i] - baseline[i]`` per seed (same seed, same data), or ``arm[i] - baseline``
    against a fixed number (e.g. chance accuracy).

    Raises:
        ValueError: the two sequences differ in length (a seed missing from one arm).
    """
    if isinstance(baseline, int | float):
        return [float(a) - float(baseline) for a in arm]
    if len(arm) != len(baseline):
        raise ValueError(
            f"paired differences need one value per seed in both arms, got {len(arm)} "
            f"and {len(baseline)}"
        )
    return [float(a) - float(b) for a, b in zip(arm, baseline, strict=True)]


def verdict(interval: Interval, direction: Direction, margin: float = 0.0) -> str:
    """``"shown"`` when the interval of ``arm - baseline`` lies beyond ``margin`` on the
    claimed side (``low > margin`` for ``"higher"``, ``high < margin`` for ``"lower"``),
    else ``"not shown"``. ``margin`` 0 is a superiority claim; a negative margin with
    ``"higher"`` is a non-inferiority claim ("loses at most ``-margin``")."""
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    ok = interval.low > margin if direction == "higher" else interval.high < margin
    return SHOWN if ok else NOT_SHOWN
