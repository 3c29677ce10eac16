"""What every Kubeflow component does, written once: materialise inputs, run the stage, publish outputs.

A KFP step runs in its own pod (locally: its own subprocess) in an empty working directory, while a
stage function (duelguard.stages) reads and writes the paths of a Layout. So each component in
pipelines/duelguard_pipeline.py is a few lines that call `run_component`, which

1. validates params.yaml (the `params_json` pipeline parameter) under the chosen profile,
2. merges its input artifacts into a fresh Layout root,
3. runs the stage by name — the same function `dvc repro` and `duelguard loop` run,
4. copies the Layout paths the stage wrote (the PUBLISHED table) into its output artifacts, logs the
   stage's numeric summary on a Metrics output and renders it as a Markdown report.

Artifacts are *root-relative trees*: an artifact directory holds its files at the paths they have
under the repository root (data/seed/train.jsonl, models/classifier/iter_1/...). Materialising is
then one merge-copy per input, and a downloaded artifact copied into a DVC checkout lands exactly
where `dvc repro` writes the same file: for the same params, the pipeline and DVC produce the same
datasets, and `dvc commit && dvc push` versions a pipeline run's data (docs/deploy.md).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from duelguard.config import ConfigError, Params, resolve
from duelguard.layout import Layout

PathsFn = Callable[[Params, Layout, int], list[Path]]


class ArtifactLike(Protocol):
    """The part of a kfp.dsl artifact the glue uses (kept structural so this module never imports kfp)."""

    path: str
    metadata: dict[str, Any]


def _none(params: Params, layout: Layout, i: int) -> list[Path]:
    return []


@dataclass(frozen=True)
class Published:
    """Which Layout paths one output artifact receives: required ones must exist after the stage."""

    required: PathsFn
    optional: PathsFn = _none


def _seed(params: Params, layout: Layout, i: int) -> list[Path]:
    return [layout.seed_dir]


def _synthetic_upto(params: Params, layout: Layout, i: int) -> list[Path]:
    return [layout.curated(j) for j in range(1, i + 1)]


def _repository(params: Params, layout: Layout, i: int) -> list[Path]:
    from duelguard.serving.export import repository_dir

    return [repository_dir(params, layout)]


def _registry_record(params: Params, layout: Layout, i: int) -> list[Path]:
    from duelguard.registry.registry import registry_record

    return [registry_record(layout, i)]


def _promotion_record(params: Params, layout: Layout, i: int) -> list[Path]:
    from duelguard.registry.registry import promotion_record

    return [promotion_record(layout, i)]


# stage -> output name -> what that output artifact holds. The `data` Dataset is cumulative: the seed
# after prepare_seed, seed + curated synthetic data of iterations <= i after curate(i), i.e. exactly
# the training data of classifier i (Layout.classifier_training_files). Plots ride along (optional).
PUBLISHED: dict[str, dict[str, Published]] = {
    "prepare_seed": {"data": Published(_seed, lambda p, lay, i: [lay.seed_card, lay.plots_dir("seed")])},
    "train_classifier": {"model": Published(lambda p, lay, i: [lay.classifier_dir(i)],
                                            lambda p, lay, i: [lay.train_metrics(i), lay.plots_dir("train", i)])},
    "evaluate": {"metrics": Published(lambda p, lay, i: [lay.eval_metrics(i)], lambda p, lay, i: [lay.plots_dir("eval", i)])},
    "register": {"record": Published(_registry_record)},
    "promote": {"decision": Published(_promotion_record)},
    "generate": {"generated": Published(lambda p, lay, i: [lay.generated(i)])},
    "curate": {"data": Published(lambda p, lay, i: _seed(p, lay, i) + _synthetic_upto(p, lay, i), lambda p, lay, i: [lay.seed_card])},
    "score": {"scored": Published(lambda p, lay, i: [lay.scored(i)], lambda p, lay, i: [lay.game_metrics(i)])},
    "build_pairs": {"pairs": Published(lambda p, lay, i: [lay.pairs(i)], lambda p, lay, i: [lay.game_metrics(i)])},
    "train_generator": {"generator": Published(lambda p, lay, i: [lay.generator_dir(i)])},
    "export": {"repository": Published(_repository)},
}


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


def publish(stage: str, name: str, spec: Published, params: Params, layout: Layout, iteration: int, artifact: ArtifactLike) -> list[str]:
    """Copy the stage's outputs into `artifact` as a root-relative tree; returns the relative paths copied."""
    target = Path(artifact.path)
    copied: list[str] = []
    required = spec.required(params, layout, iteration)
    for path, must in [(p, True) for p in required] + [(p, False) for p in spec.optional(params, layout, iteration)]:
        if not path.exists():
            if must:
                raise FileNotFoundError(f"stage {stage} (iteration {iteration}) did not write {path}, its output {name!r}")
            continue
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


def render_report(stage: str, iteration: int, summary: Mapping[str, Any]) -> str:
    """The stage's summary as Markdown: a table of its numbers, then the full summary as JSON."""
    lines = [f"# duelguard {stage}, iteration {iteration}", ""]
    scalars = scalar_leaves(summary)
    if scalars:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v:.4g} |" for k, v in sorted(scalars.items())] + [""]
    lines += ["```json", json.dumps(summary, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)


def run_component(
    stage: str,
    params_json: str,
    profile: str,
    iteration: int,
    *,
    inputs: Sequence[ArtifactLike | None] = (),
    outputs: Mapping[str, ArtifactLike] | None = None,
    raw_data: ArtifactLike | None = None,
    report: ArtifactLike | None = None,
    expected_iterations: int | None = None,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Run one stage inside a KFP component; returns the stage's summary (JSON-safe).

    `inputs` are root-relative artifact trees (None = an optional input that was not connected);
    `outputs` name the stage's PUBLISHED outputs; `raw_data` is the raw corpora directory that
    prepare_seed reads (params.paths.raw_data is pointed at it); `expected_iterations` is the number of
    iterations the pipeline was compiled with, which params.yaml's loop.iterations must match.
    """
    from duelguard.stages import run_stage

    params = params_from_text(params_json, profile)
    if expected_iterations is not None and params.loop.iterations != expected_iterations:
        raise ConfigError(
            f"loop.iterations is {params.loop.iterations} in params_json but the pipeline was compiled with "
            f"{expected_iterations} iterations (they are unrolled at compile time): recompile with `duelguard pipeline compile`"
        )
    require_shared_tracking(params)
    outputs = dict(outputs or {})
    unknown = set(outputs) - set(PUBLISHED[stage])
    if unknown:
        raise KeyError(f"stage {stage} publishes {sorted(PUBLISHED[stage])}, not {sorted(unknown)}")
    if raw_data is not None:
        params = params.model_copy(update={"paths": params.paths.model_copy(update={"raw_data": str(Path(raw_data.path).resolve())})})

    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"duelguard-{stage}-"))
    root.mkdir(parents=True, exist_ok=True)
    layout = Layout.from_params(params, root)
    for artifact in inputs:
        if artifact is not None:
            merge_tree(Path(artifact.path), layout.root)

    summary = json.loads(json.dumps(run_stage(stage, params, layout, iteration), default=str))

    for name, artifact in outputs.items():
        publish(stage, name, PUBLISHED[stage][name], params, layout, iteration, artifact)
        if hasattr(artifact, "log_metric"):
            for key, value in scalar_leaves(summary).items():
                artifact.log_metric(key, value)
    if report is not None:
        Path(report.path).parent.mkdir(parents=True, exist_ok=True)
        Path(report.path).write_text(render_report(stage, iteration, summary), encoding="utf-8")
    return summary
