"""Anomaly detectors on regular time series: pure numpy, no database.

Every detector takes a 2-D array `x` of shape (series, time), one row per series, sampled at a
fixed step, and returns a `Detection` with, for every point, the expected value, a score and an
anomaly flag. Detectors are causal: the verdict at t uses only x[:t+1], so running them on the
whole history gives exactly what an hourly scan would have said at each hour. `start` limits the
work to points t >= start (the scan only needs the last day or two); earlier points come back as
not anomalous with NaN expectations.

| detector | baseline | flags when | parameters (defaults, in samples = hours for the scan) |
|---|---|---|---|
| spike | median of the trailing `window` points | robust z = (x − median) / (1.4826·MAD) > `threshold` | window 168, threshold 5.0, min_history 24 |
| iqr | quartiles of the trailing `window` points | x > Q3 + `k`·IQR (or < Q1 − k·IQR) | window 168, k 3.0, min_history 24 |
| pattern | median of the same hour of week in the previous `weeks` weeks (±`slot_halfwidth` hours) | z of the residual on the square-root scale (√x − √expected) against the robust spread of past residuals > `threshold` | season 168, weeks 4, slot_halfwidth 1, threshold 7.0, residual_window 336, power 0.5 |
| mix | median share over the trailing `window` | share − baseline > `min_shift` and robust z > `threshold` | window 168, min_shift 0.2, threshold 3.0 |
| level | mean and standard deviation of the trailing `window` points (the naive static threshold, made causal) | z = (x − mean) / σ > `threshold` | window 672, threshold 5.0, min_history 24 |
| combined | the pattern's expectation (else the spike median) | pattern AND (spike z > `confirm_spike` OR iqr score > `confirm_iqr`); before one season of history exists: spike AND level | confirm_spike 2.5, confirm_iqr 0.0 (above Q3), and the parameters above |

Scales have floors (`rel_floor`·|baseline| and `abs_floor`) so a flat or all-zero history does not
turn every small wiggle into an infinite z-score. `direction` is "up" (cost: only increases are
incidents) or "both" (the NAB evaluation, whose labelled windows include drops).

Flagged points become incidents in two steps, shared by the scan and the evaluation: runs of flagged
points closer than a small gap merge (`merge_runs`), and a run that starts within a re-alert cooldown
after the end of the series' previous incident joins that incident instead of opening (and paging)
a new one (`group_runs`). The pattern threshold and power and the cooldown were chosen by a grid
search on NAB; `manage.py eval_anomalies` repeats that search inside cross-validation (leave one file
out, and one NAB family out) and reports the out-of-sample figures next to the in-sample ones, and leaves
one NAB corpus out at a time against the naive threshold grouped like the scan (docs/anomaly-eval.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 1.4826
_CHUNK = 512  # time steps per vectorised block: bounds the memory of the (series, time, window) views


@dataclass(frozen=True)
class Detection:
    flags: np.ndarray  # bool (series, time)
    expected: np.ndarray  # float (series, time); NaN where the detector has no baseline
    score: np.ndarray  # float (series, time); signed, in robust standard deviations (or fence widths)


@dataclass(frozen=True)
class SpikeParams:
    window: int = 168
    threshold: float = 5.0
    min_history: int = 24
    rel_floor: float = 0.05
    abs_floor: float = 1e-6
    direction: str = "up"


@dataclass(frozen=True)
class IQRParams:
    window: int = 168
    k: float = 3.0
    min_history: int = 24
    rel_floor: float = 0.05
    abs_floor: float = 1e-6
    direction: str = "up"


@dataclass(frozen=True)
class PatternParams:
    season: int = 168
    weeks: int = 4
    slot_halfwidth: int = 1
    threshold: float = 7.0
    residual_window: int = 336
    min_residuals: int = 24
    rel_floor: float = 0.1  # the spread is at least the residual of a 10 % departure from the expected value
    abs_floor: float = 1e-6
    power: float = 0.5  # residuals on the square-root scale; 1.0 for plain differences
    direction: str = "up"


@dataclass(frozen=True)
class LevelParams:
    window: int = 672
    threshold: float = 5.0
    min_history: int = 24
    rel_floor: float = 0.05
    abs_floor: float = 1e-6
    direction: str = "up"


@dataclass(frozen=True)
class MixParams:
    window: int = 168
    min_shift: float = 0.2
    threshold: float = 3.0
    min_history: int = 24
    abs_floor: float = 0.02


@dataclass(frozen=True)
class CombinedParams:
    spike: SpikeParams = SpikeParams()
    iqr: IQRParams = IQRParams()
    pattern: PatternParams = PatternParams()
    level: LevelParams = LevelParams()
    # Confirmation bars: lower than the stand-alone thresholds, because they only have to agree with
    # the pattern detector that the level is also unusual for the last week, not find it on their own.
    confirm_spike: float = 2.5
    confirm_iqr: float = 0.0  # above the upper quartile of the last week


def _as2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[None, :] if x.ndim == 1 else x


def _trailing_windows(x: np.ndarray, window: int, lo: int, hi: int) -> np.ndarray:
    """(series, hi-lo, window) view: row t holds x[t-window:t], NaN-padded before the first point."""
    padded = np.concatenate([np.full((x.shape[0], window), np.nan), x], axis=1)
    view = np.lib.stride_tricks.sliding_window_view(padded, window, axis=1)
    return view[:, lo:hi, :]


def _quantiles(windows: np.ndarray, qs: list[float], has_nan: bool) -> list[np.ndarray]:
    func = np.nanquantile if has_nan else np.quantile
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = func(windows, qs, axis=-1)
    return [out[i] for i in range(len(qs))]


def _nanmedian(values: np.ndarray, axis: int = -1) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(values, axis=axis)


def _flag(z: np.ndarray, threshold: float, direction: str) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        if direction == "both":
            return np.abs(z) > threshold
        return z > threshold


def spike(x: np.ndarray, params: SpikeParams = SpikeParams(), *, start: int = 0) -> Detection:
    """Robust z-score of each point against the median and MAD of the trailing `window` points."""
    x = _as2d(x)
    n_series, n = x.shape
    expected = np.full(x.shape, np.nan)
    score = np.full(x.shape, np.nan)
    has_nan = bool(np.isnan(x).any())
    for lo in range(max(start, 0), n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        win = _trailing_windows(x, params.window, lo, hi)
        count = np.sum(~np.isnan(win), axis=-1)
        med = _nanmedian(win) if (has_nan or lo < params.window) else np.median(win, axis=-1)
        mad = (
            _nanmedian(np.abs(win - med[..., None]))
            if (has_nan or lo < params.window)
            else np.median(np.abs(win - med[..., None]), axis=-1)
        )
        sigma = np.maximum(MAD_TO_SIGMA * mad, np.maximum(params.rel_floor * np.abs(med), params.abs_floor))
        ok = count >= params.min_history
        expected[:, lo:hi] = np.where(ok, med, np.nan)
        score[:, lo:hi] = np.where(ok, (x[:, lo:hi] - med) / sigma, np.nan)
    return Detection(flags=_flag(score, params.threshold, params.direction), expected=expected, score=score)


def iqr(x: np.ndarray, params: IQRParams = IQRParams(), *, start: int = 0) -> Detection:
    """Tukey fences on the trailing `window` points; the score is the distance past the fence in IQRs."""
    x = _as2d(x)
    n = x.shape[1]
    expected = np.full(x.shape, np.nan)
    score = np.full(x.shape, np.nan)
    has_nan = bool(np.isnan(x).any())
    for lo in range(max(start, 0), n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        win = _trailing_windows(x, params.window, lo, hi)
        count = np.sum(~np.isnan(win), axis=-1)
        q1, med, q3 = _quantiles(win, [0.25, 0.5, 0.75], has_nan or lo < params.window)
        spread = np.maximum(q3 - q1, np.maximum(params.rel_floor * np.abs(med), params.abs_floor))
        values = x[:, lo:hi]
        # 0 at the fence; k at Q3 (or Q1), so the flag is score > 0 and the score reads "IQRs past the box".
        upper = (values - q3) / spread
        lower = (q1 - values) / spread
        signed = np.where(upper >= lower, upper, -lower) if params.direction == "both" else upper
        ok = count >= params.min_history
        expected[:, lo:hi] = np.where(ok, med, np.nan)
        score[:, lo:hi] = np.where(ok, signed, np.nan)
    return Detection(flags=_flag(score, params.k, params.direction), expected=expected, score=score)


def pattern(x: np.ndarray, params: PatternParams = PatternParams(), *, start: int = 0) -> Detection:
    """Departure from the same hour of week: the median of that slot (± slot_halfwidth) over past weeks.

    Spend is a sum over requests, so its hourly noise grows with its level, roughly like the square
    root of it (a count's): a busy afternoon wobbles by more dollars than a quiet night. The departure
    is therefore measured on a power scale, r = x**power − expected**power (power 0.5: the square
    root, the variance-stabilising transform for counts; 1.0 measures plain differences), and scored
    against the robust spread (MAD) of the same residuals over the previous `residual_window` points.
    A noisy series needs a larger departure than a smooth one, and quiet hours are held to the same
    standard as busy ones. The square root is scale-free (dollars or cents give the same scores) and
    handles hours at zero. The spread has a floor: the residual of a departure of `rel_floor` × the
    expected value, so a very smooth series still needs a departure of several times that to alert.
    Values are expected to be non-negative (spend, counts); negative values count as 0. The returned
    expectation is in the series' own units.
    """
    x = _as2d(x)
    n_series, n = x.shape
    season, half = params.season, params.slot_halfwidth
    offsets = np.array([w * season + d for w in range(1, params.weeks + 1) for d in range(-half, half + 1)])
    # Residuals are needed for `residual_window` points before `start` too.
    first = max(0, start - params.residual_window)
    expected = np.full(x.shape, np.nan)
    padded = np.concatenate([np.full((n_series, offsets.max()), np.nan), x, np.full((n_series, half), np.nan)], axis=1)
    base = offsets.max()
    idx = np.arange(first, n)
    # Lags beyond the last sample (d < 0 near t) are still in the past: t - (w*season - 1) < t for w >= 1.
    slots = padded[:, (base + idx)[:, None] - offsets[None, :]]  # (series, time, lags)
    expected[:, first:] = _nanmedian(slots)
    with np.errstate(invalid="ignore"):
        scaled = np.maximum(expected, 0.0) ** params.power
        residual = np.maximum(x, 0.0) ** params.power - scaled
    floor_factor = (1.0 + params.rel_floor) ** params.power - 1.0
    score = np.full(x.shape, np.nan)
    for lo in range(max(start, 0), n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        win = _trailing_windows(residual, params.residual_window, lo, hi)
        count = np.sum(~np.isnan(win), axis=-1)
        center = _nanmedian(win)
        mad = _nanmedian(np.abs(win - center[..., None]))
        sigma = np.maximum(MAD_TO_SIGMA * mad, np.maximum(floor_factor * scaled[:, lo:hi], params.abs_floor**params.power))
        ok = (count >= params.min_residuals) & ~np.isnan(expected[:, lo:hi])
        score[:, lo:hi] = np.where(ok, residual[:, lo:hi] / sigma, np.nan)
    expected[:, :start] = np.nan
    return Detection(flags=_flag(score, params.threshold, params.direction), expected=expected, score=score)


def level(x: np.ndarray, params: LevelParams = LevelParams(), *, start: int = 0) -> Detection:
    """z of each point against the mean and standard deviation of the trailing `window` points (NaN skipped).

    The naive static threshold (mean ± k·σ of the past), made causal with a long trailing window instead of
    a fixed calibration period. Linear time: running sums, no windows materialised.
    """
    x = _as2d(x)
    n = x.shape[1]
    ok_values = ~np.isnan(x)
    # Shift by the first value of each series so the running sums of squares do not lose precision.
    shift = np.nan_to_num(x[np.arange(x.shape[0]), np.argmax(ok_values, axis=1)])[:, None]
    v = np.where(ok_values, x - shift, 0.0)
    zeros = np.zeros((x.shape[0], 1))
    c1 = np.concatenate([zeros, np.cumsum(v, axis=1)], axis=1)
    c2 = np.concatenate([zeros, np.cumsum(v * v, axis=1)], axis=1)
    cn = np.concatenate([zeros, np.cumsum(ok_values, axis=1)], axis=1)
    t = np.arange(max(start, 0), n)
    lo = np.maximum(0, t - params.window)
    count = cn[:, t] - cn[:, lo]
    expected = np.full(x.shape, np.nan)
    score = np.full(x.shape, np.nan)
    with np.errstate(all="ignore"):
        mean = (c1[:, t] - c1[:, lo]) / count
        sd = np.sqrt(np.maximum((c2[:, t] - c2[:, lo]) / count - mean * mean, 0.0))
        mean = mean + shift
        sigma = np.maximum(sd, np.maximum(params.rel_floor * np.abs(mean), params.abs_floor))
        ok = count >= params.min_history
        expected[:, t] = np.where(ok, mean, np.nan)
        score[:, t] = np.where(ok, (x[:, t] - mean) / sigma, np.nan)
    return Detection(flags=_flag(score, params.threshold, params.direction), expected=expected, score=score)


def mix(share: np.ndarray, params: MixParams = MixParams(), *, start: int = 0) -> Detection:
    """Shift in a share (premium models' part of spend, 0..1) against its trailing median.

    Both an absolute shift (`min_shift`, e.g. 20 points of spend moving to premium models) and a
    robust z (`threshold`) are required, so a share that always jumps about is not flagged for it.
    NaN (no spend that hour) is never anomalous.
    """
    share = _as2d(share)
    n = share.shape[1]
    expected = np.full(share.shape, np.nan)
    score = np.full(share.shape, np.nan)
    shift = np.full(share.shape, np.nan)
    for lo in range(max(start, 0), n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        win = _trailing_windows(share, params.window, lo, hi)
        count = np.sum(~np.isnan(win), axis=-1)
        med = _nanmedian(win)
        mad = _nanmedian(np.abs(win - med[..., None]))
        sigma = np.maximum(MAD_TO_SIGMA * mad, params.abs_floor)
        ok = count >= params.min_history
        expected[:, lo:hi] = np.where(ok, med, np.nan)
        score[:, lo:hi] = np.where(ok, (share[:, lo:hi] - med) / sigma, np.nan)
        shift[:, lo:hi] = np.where(ok, share[:, lo:hi] - med, np.nan)
    with np.errstate(invalid="ignore"):
        flags = (score > params.threshold) & (shift > params.min_shift)
    return Detection(flags=flags, expected=expected, score=score)


def combined(
    x: np.ndarray, params: CombinedParams = CombinedParams(), *, start: int = 0
) -> tuple[Detection, dict[str, Detection]]:
    """Pattern deviation confirmed by a (relaxed) spike or fence breach; spike AND level while no season is known.

    Requiring the hour-of-week view to agree removes the daily and weekly peaks that a trailing
    window alone calls spikes; requiring a trailing-window detector to agree removes departures that
    the last few hours already made normal (a level that has held for days). Before a season of
    history exists, a point must be a spike against the last week's median AND far from the mean of
    all the history there is (`level`, the naive threshold made causal): on short histories the
    long-run level is the steadier reference (leave-one-corpus-out on NAB, docs/anomaly-eval.md).
    The expected value is the pattern's where it exists, else the spike detector's median.
    """
    parts = {
        "spike": spike(x, params.spike, start=start),
        "iqr": iqr(x, params.iqr, start=start),
        "pattern": pattern(x, params.pattern, start=start),
        "level": level(x, params.level, start=start),
    }
    return combine(parts, params), parts


def combine(parts: dict[str, Detection], params: CombinedParams = CombinedParams()) -> Detection:
    """The combined verdict from the parts' scores, applying the thresholds in `params` (only those:
    the baselines are the parts'), so the evaluation can try thresholds without recomputing them."""
    s, q, p, lv = parts["spike"], parts["iqr"], parts["pattern"], parts["level"]
    has_season = ~np.isnan(p.score)
    confirmed = _flag(s.score, params.confirm_spike, params.spike.direction) | _flag(
        q.score, params.confirm_iqr, params.iqr.direction
    )
    before_season = _flag(s.score, params.spike.threshold, params.spike.direction) & _flag(
        lv.score, params.level.threshold, params.level.direction
    )
    flags = np.where(has_season, _flag(p.score, params.pattern.threshold, params.pattern.direction) & confirmed, before_season)
    expected = np.where(np.isnan(p.expected), s.expected, p.expected)
    score = np.where(has_season, p.score, s.score)
    return Detection(flags=flags, expected=expected, score=score)


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of consecutive True values in a 1-D bool array: one incident each."""
    f = np.asarray(flags, dtype=bool).astype(np.int8)
    if f.size == 0:
        return []
    edges = np.diff(np.concatenate([[0], f, [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def merge_runs(spans: list[tuple[int, int]], *, gap: int = 0) -> list[tuple[int, int]]:
    """Merge spans separated by at most `gap` normal points (a one-hour dip does not split an incident)."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if merged and lo - merged[-1][1] <= gap:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def group_runs(spans: list[tuple[int, int]], *, cooldown: int) -> list[list[tuple[int, int]]]:
    """Group spans into incidents: a span that starts at most `cooldown` points after the end of the
    previous group joins it (the open incident absorbs it: no new incident, no new page).

    The re-alert cooldown of real alerting: while a scope has an incident that was anomalous in the
    last `cooldown` hours, more anomalous hours extend that incident rather than page again (an
    extension that raises its severity still notifies, see `anomaly_notify`).
    """
    groups: list[list[tuple[int, int]]] = []
    for lo, hi in sorted(spans):
        if groups and lo - groups[-1][-1][1] <= cooldown:
            groups[-1].append((lo, hi))
        else:
            groups.append([(lo, hi)])
    return groups
