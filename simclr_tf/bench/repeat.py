"""``simclr-bench --repeat=N``: the whole benchmark N times, every figure as its range.

Repeating whole runs interleaves everything measured (the default step, its variants, the
input pipeline, ...) over the same stretch of the machine's time, so their ratios see the
same noise. Each figure becomes the median of the runs, with ``_min`` and ``_max`` beside it:
the ranges the documentation quotes come from one such command.
"""

import statistics
from typing import Callable, Dict, List


def combine(results: List[Dict[str, float]]) -> Dict[str, float]:
    """Median, min and max over ``results`` of every figure they all have (a figure
    already named ``*_min`` / ``*_max`` keeps its own extreme)."""
    out: Dict[str, float] = {"repeats": len(results)}
    for key in results[0]:
        values = [r[key] for r in results if key in r]
        if len(values) != len(results) or not all(isinstance(v, (int, float)) for v in values):
            continue
        if key.endswith("_min"):
            out[key] = min(values)
        elif key.endswith("_max"):
            out[key] = max(values)
        else:
            out[key] = statistics.median(values)
            out.setdefault(f"{key}_min", min(values))
            out.setdefault(f"{key}_max", max(values))
    for key in results[0]:  # a run's own spread (e.g. over timed steps) widens the range
        if f"{key}_min" in results[0]:
            out[f"{key}_min"] = min(min(r[key] for r in results),
                                    min(r[f"{key}_min"] for r in results))
            out[f"{key}_max"] = max(max(r[key] for r in results),
                                    max(r[f"{key}_max"] for r in results))
    return out


def repeat(run: Callable[[], Dict[str, float]], times: int,
           report: Callable[[str], None]) -> Dict[str, float]:
    """``run()`` ``times`` times, combined; one run is returned as it is."""
    results = []
    for k in range(times):
        if times > 1:
            report(f"run {k + 1} of {times} ...")
        results.append(run())
    return results[0] if times == 1 else combine(results)
