"""What every Kubeflow component does, written once: materialise inputs, run the stage, publish outputs.

A KFP step runs in its own pod (locally: its own subprocess) in an empty working directory, while a
stage function reads and writes the paths of a Layout. So each generated component
(duelguard.pipeline.kfp_pipeline) is one call to `run_component`, which

1. validates params.yaml (the `params_json` pipeline parameter) under the chosen profile,
2. merges its input artifacts (the outputs of the runs it depends on) into a fresh Layout root,
3. runs the stage by name (duelguard.pipeline.spec.run_stage), the function `dvc repro` runs,
4. copies every output the spec declares for this run into its output artifact, logs the stage's
   numeric summary on a Metrics output and renders it as a Markdown report.

Artifacts are *root-relative trees*: an artifact directory holds its files at the paths they have
under the repository root (data/seed/train.jsonl, models/classifier/iter_1/...). Materialising is one
merge-copy per input, and a downloaded artifact copied into a DVC checkout lands exactly where `dvc
repro` writes the same file (docs/deploy.md). This module never imports kfp: artifacts are used
through the two attributes below.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from duelguard.config import ConfigError, Params, resolve
from duelguard.layout import Layout
from duelguard.pipeline.spec import StageRun, run_stage, stage


class ArtifactLike(Protocol):
    """The part of a kfp.dsl artifact the glue uses."""

    path: str
    metadata: dict[str, Any]


def params_from_text(params_json: str, profile: str) -> Params:
    """Validate the `params_json` pipeline parameter (params.yaml as JSON; YAML text works too) under `profile`."""
    import yaml

    raw = yaml.safe_load(params_json) or {}
    if not isinstance(raw, dict):
        raise ConfigError("pipeline parameter params_json: expected a mapping (params.yaml as JSON or YAML text)")
    return resolve(raw, profile or None)


def require_shared_tracking(params: Params) -> None:
    """Every step must log to the same MLflow: a repo-relative sqlite store would land in this step's
    throwaway working directory and the registry would be lost between steps."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.tracking_uri
    relative_sqlite = uri.startswith("sqlite:///") and not uri[len("sqlite:///"):].startswith("/")
    relative_dir = "://" not in uri and not Path(uri).is_absolute()
    if relative_sqlite or relative_dir:
        raise ConfigError(
            f"tracking URI {uri!r} is relative to a step's temporary working directory; set MLFLOW_TRACKING_URI "
            "(in the cluster: the duelguard-mlflow Secret; `duelguard pipeline run-local` sets a shared sqlite store)"
        )


def merge_tree(src: Path, dest: Path) -> None:
    """Copy an artifact (file or directory tree) into `dest`, merging with what is already there."""
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True)
    elif src.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / src.name)
    else:
        raise FileNotFoundError(f"input artifact {src} does not exist (was the upstream step's output published?)")


def publish(run: StageRun, layout: Layout, artifact: ArtifactLike) -> list[str]:
    """Copy every output the spec declares for `run` into `artifact` as a root-relative tree; returns
    the relative paths copied. A declared output the stage did not write is an error."""
    target = Path(artifact.path)
    copied: list[str] = []
    for path in run.outputs(layout):
        if not path.exists():
            raise FileNotFoundError(f"stage run {run.name} did not write {path}, one of its declared outputs")
        try:
            rel = path.resolve().relative_to(layout.root)
        except ValueError:
            raise ConfigError(f"{path}: outside the working root {layout.root}; paths.* must be relative to publish it") from None
        dest = target / rel
        if path.is_dir():
            shutil.copytree(path, dest, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        copied.append(rel.as_posix())
    return copied


def scalar_leaves(obj: Any, prefix: str = "") -> dict[str, float]:
    """Finite numeric leaves of a nested summary as dotted names (bools excluded): KFP's scalar metrics."""
    out: dict[str, float] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            out.update(scalar_leaves(value, f"{prefix}{key}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool) and math.isfinite(obj):
        out[prefix.rstrip(".")] = float(obj)
    return out


def render_report(run_name: str, summary: Mapping[str, Any]) -> str:
    """The stage's summary as Markdown: a table of its numbers, then the full summary as JSON."""
    lines = [f"# duelguard {run_name}", ""]
    scalars = scalar_leaves(summary)
    if scalars:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v:.4g} |" for k, v in sorted(scalars.items())] + [""]
    lines += ["```json", json.dumps(summary, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)


def run_component(
    stage_name: str,
    params_json: str,
    profile: str,
    iteration: int,
    iterations: int,
    *,
    inputs: Sequence[ArtifactLike] = (),
    output: ArtifactLike | None = None,
    metrics: ArtifactLike | None = None,
    report: ArtifactLike | None = None,
    raw_data: ArtifactLike | None = None,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Run one stage inside a KFP component; returns the stage's summary (JSON-safe).

    `inputs` are the root-relative output trees of the runs this one depends on; `raw_data` is the raw
    corpora directory (params.paths.raw_data is pointed at it); `iterations` is the number of loop
    iterations the pipeline was compiled with, which params.yaml's loop.iterations must match.
    The stage runs in `workdir` if given, else in a temporary directory removed when the step ends.
    """
    params = params_from_text(params_json, profile)
    if params.loop.iterations != iterations:
        raise ConfigError(
            f"loop.iterations is {params.loop.iterations} in params_json but the pipeline was compiled with "
            f"{iterations} iterations (they are unrolled at compile time): recompile with `duelguard pipeline compile`"
        )
    require_shared_tracking(params)
    if raw_data is not None:
        params = params.model_copy(update={"paths": params.paths.model_copy(update={"raw_data": str(Path(raw_data.path).resolve())})})

    with contextlib.ExitStack() as scratch:
        # A step's working root is throwaway (everything worth keeping is published below): removed when
        # the step ends, failed or not, unless the caller passed its own `workdir`.
        root = Path(workdir) if workdir else Path(scratch.enter_context(
            tempfile.TemporaryDirectory(prefix=f"duelguard-{stage_name}-")))
        root.mkdir(parents=True, exist_ok=True)
        layout = Layout.from_params(params, root)
        for artifact in inputs:
            merge_tree(Path(artifact.path), layout.root)
        summary = json.loads(json.dumps(run_stage(stage_name, params, layout, iteration), default=str))
        run = StageRun(stage(stage_name), iteration, iterations)
        if output is not None:
            publish(run, layout, output)
    if metrics is not None and hasattr(metrics, "log_metric"):
        for key, value in scalar_leaves(summary).items():
            metrics.log_metric(key, value)
    if report is not None:
        Path(report.path).parent.mkdir(parents=True, exist_ok=True)
        Path(report.path).write_text(render_report(run.name, summary), encoding="utf-8")
    return summary
