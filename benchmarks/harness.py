"""Runs each benchmark stage in a fresh process and reports wall time and peak RSS.

A stage is a zero-argument function importable by ``module:function``. Running it in its own
process makes the peak resident set size (``ru_maxrss``) belong to that stage alone. A stage
returns a note, or ``(seconds, note)`` when only part of its work (not the data set-up) is timed.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time


def _run_in_this_process(target: str) -> None:
    import resource

    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    started = time.perf_counter()
    outcome = function()
    seconds = time.perf_counter() - started
    if isinstance(outcome, tuple):
        seconds, note = outcome
    else:
        note = outcome
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "note": note or ""}))


def measure(stage: str, target: str, target_text: str) -> dict:
    """Run ``target`` in a subprocess; return a row for the results table."""
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.harness", target],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark {stage} failed:\n{completed.stderr}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    return {"stage": stage, "target": target_text, **result}


def print_table(rows: list[dict]) -> None:
    header = f"{'stage':<44} {'seconds':>9} {'peak RSS MB':>12}  {'target':<22} note"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['stage']:<44} {row['seconds']:>9.2f} {row['peak_rss_mb']:>12.0f}  {row['target']:<22} {row['note']}"
        )


if __name__ == "__main__":
    _run_in_this_process(sys.argv[1])
