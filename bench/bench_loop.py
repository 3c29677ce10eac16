"""Loop benchmark: per-iteration wall time by stage, generation samples/s and DPO steps/s.

    python bench/bench_loop.py [--run N] [--profile NAME] [--params params.yaml] [--root .]

Reads the wall time every stage run recorded (Layout.timing: metrics/timings/<run>.json, written by
duelguard.pipeline.spec.run_stage whether DVC or Kubeflow ran it; `make demo` leaves them behind),
the generate summaries and the DPO metrics; with --run N it first runs `duelguard loop --iterations N`
(dvc repro: stages that are up to date keep the time they took when they ran) in --root, on the
profile of its params.yaml. Prints a table and writes bench/results/loop.json. Not a test: the
figures depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path
from typing import Any

from duelguard.config import load_params
from duelguard.fsio import DataError, atomic_write_json, read_json
from duelguard.layout import Layout
from duelguard.pipeline.spec import STAGES

REPO_ROOT = Path(__file__).resolve().parents[1]


ORDER = [s.name for s in STAGES]


def stage_timings(layout: Layout) -> dict[str, dict[str, float]]:
    """{iteration: {stage: seconds}} from the records run_stage writes for every stage run (so DVC and
    Kubeflow runs are measured the same way); a once-per-loop stage counts in the iteration it ran at."""
    table: dict[str, dict[str, float]] = {}
    for path in sorted(layout.timings_dir.glob("*.json")):
        rec = read_json(path)
        table.setdefault(str(rec["iteration"]), {})[rec["stage"]] = rec["seconds"]
    order = ORDER
    return {it: dict(sorted(stages.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))
            for it, stages in sorted(table.items(), key=lambda kv: int(kv[0]))}


def collect(layout: Layout, profile: str) -> dict[str, Any]:
    """Timings per iteration and stage, plus generation and DPO throughput per iteration."""
    timings = stage_timings(layout)
    if not timings:
        raise DataError(f"{layout.timings_dir}: no stage timings; run `dvc repro` or `duelguard loop` first "
                        "(or pass --run N)")
    per_iteration: dict[str, Any] = {}
    for it, stages in timings.items():
        row: dict[str, Any] = {"stages_s": stages, "total_s": round(sum(stages.values()), 3)}
        i = int(it)
        if i >= 1:
            gen_path = layout.generate_summary(i)
            gen = read_json(gen_path) if gen_path.exists() else {}
            dpo_path = layout.dpo_metrics(i)
            dpo = read_json(dpo_path) if dpo_path.exists() else {}
            row["generation"] = {k: gen.get(k) for k in ("requested", "records", "samples_per_s", "generate_s", "load_s")}
            row["dpo"] = {k: dpo.get(k) for k in ("pairs_used", "steps", "steps_per_s", "train_runtime_s", "updated")}
        per_iteration[it] = row
    total = round(sum(row["total_s"] for row in per_iteration.values()), 3)
    return {"profile": profile, "total_s": total, "iterations": per_iteration}


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    its = list(result["iterations"])
    table = Table(title=f"duelguard loop, profile {result['profile']} ({result['machine']})")
    table.add_column("")
    for it in its:
        table.add_column(f"iter {it}", justify="right")
    for stage in ORDER:
        cells = [result["iterations"][it]["stages_s"].get(stage) for it in its]
        table.add_row(f"{stage} (s)", *["" if c is None else f"{c:.1f}" for c in cells])
    table.add_row("total (s)", *[f"{result['iterations'][it]['total_s']:.1f}" for it in its])

    def extra(section: str, key: str, fmt: str) -> list[str]:
        out = []
        for it in its:
            value = (result["iterations"][it].get(section) or {}).get(key)
            out.append("" if value is None else format(value, fmt))
        return out

    table.add_row("generation samples/s", *extra("generation", "samples_per_s", ".2f"))
    table.add_row("DPO pairs", *extra("dpo", "pairs_used", "d"))
    table.add_row("DPO steps/s", *extra("dpo", "steps_per_s", ".3f"))
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=int, metavar="N", help="run `duelguard loop --iterations N` (dvc repro) in --root first")
    parser.add_argument("--profile", default=None, help="params profile (default: params.yaml's `profile`)")
    parser.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    parser.add_argument("--root", default=str(REPO_ROOT))
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / "loop.json"))
    args = parser.parse_args()

    if args.run is not None:
        from duelguard.pipeline.dvc import repro

        if repro(args.root, args.run) != 0:
            raise SystemExit("dvc repro failed")
    params = load_params(args.params, args.profile)
    layout = Layout.from_params(params, args.root)
    result = collect(layout, params.profile)
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}"
    print_table(result)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
