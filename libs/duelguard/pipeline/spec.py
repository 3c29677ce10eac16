"""The stage spec: every stage of the pipeline declared once, here.

A stage is a library function `fn(params, layout, iteration) -> dict` plus what a runner needs to
know about it: at which iterations it runs, the params.yaml keys it reads, the Layout paths it reads
(its data dependencies) and writes (outs: data and models, cached by DVC; metrics and plots: small
files tracked by git), and whether it has side effects outside those files. Everything else is
derived from this table:

- dvc.yaml is generated from it (duelguard.pipeline.dvc; a test fails when the committed file
  differs), with each stage's code dependencies computed from the modules its function imports;
- the Kubeflow pipeline builds one component per stage run from it, wires each run's inputs to the
  runs that produce them and publishes exactly the declared outputs (duelguard.pipeline.kfp_*);
- `duelguard stage NAME -i I` runs one stage by name (run_stage).

Ordering comes only from data: a run depends on the runs that write the paths it reads. Adding a
stage is one entry below plus its function.

Iterations: iteration 0 is the seed-only baseline, 1..N the loop (N = params.yaml loop.iterations).
A stage runs `first` (once, before everything: the seed), at `every` iteration 0..N, at each `loop`
iteration 1..N, at each `loop_but_last` iteration 1..N-1 (what only the next iteration reads: the
generator's DPO; raising loop.iterations runs iteration N's then), or `last` (once, after iteration N:
reports, export).

Side effects: register and promote change the MLflow registry, export reads its champion. Such a
stage is never restored from a cache: DVC keeps its record out of the run cache (`persist: true`)
and git-tracks it, Kubeflow runs it with caching off. See docs/contracts.md.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from duelguard.config import Params
from duelguard.layout import Layout

StageFn = Callable[[Params, Layout, int], dict[str, Any]]
# (layout, iteration, iterations) -> paths: what one run of a stage reads or writes.
PathsFn = Callable[[Layout, int, int], list[Path]]
When = Literal["first", "every", "loop", "loop_but_last", "last"]
PLATFORMS = frozenset({"dvc", "kfp"})
# Every stage reads these: the active profile's overrides feed every section of params.yaml.
PROFILE_PARAMS = ("profile", "profiles")


class SpecError(ValueError):
    """The stage spec is inconsistent (a dependency nobody writes, two stages writing one path...)."""


def _none(layout: Layout, i: int, n: int) -> list[Path]:
    return []


@dataclass(frozen=True)
class Stage:
    """One stage: its function and its contract with every runner."""

    name: str
    function: str  # "module:attribute", imported only when the stage runs
    doc: str
    when: When
    params: tuple[str, ...]  # dotted params.yaml keys (a section name means the whole section)
    deps: PathsFn  # data it reads (Layout paths, or paths.raw_data)
    outs: PathsFn = _none  # data and models it writes: cached by DVC, pushed to the DVC remote
    metrics: PathsFn = _none  # small JSON it writes: tracked by git
    plots: PathsFn = _none  # PNG / Markdown it writes: tracked by git
    side_effects: bool = False  # changes or reads state outside its files (the model registry)
    gpu: bool = False  # on a cluster: request an accelerator
    model_cache: bool = False  # on a cluster: mount the weights cache (loads model weights)
    platforms: frozenset[str] = field(default=PLATFORMS)

    def iterations(self, n: int) -> list[int]:
        """The iterations this stage runs at when the loop has `n` iterations."""
        return {"first": [0], "every": list(range(n + 1)), "loop": list(range(1, n + 1)),
                "loop_but_last": list(range(1, n)), "last": [n]}[self.when]


@dataclass(frozen=True)
class StageRun:
    """One run of a stage: the stage at one iteration of an `iterations`-iteration loop."""

    stage: Stage
    iteration: int
    iterations: int

    @property
    def name(self) -> str:
        """The run's name in dvc.yaml and in the Kubeflow pipeline: the stage name, plus _<i> per iteration."""
        once = self.stage.when in ("first", "last")
        return self.stage.name if once else f"{self.stage.name}_{self.iteration}"

    def deps(self, layout: Layout) -> list[Path]:
        return _unique(self.stage.deps(layout, self.iteration, self.iterations))

    def outs(self, layout: Layout) -> list[Path]:
        return _unique(self.stage.outs(layout, self.iteration, self.iterations))

    def metrics(self, layout: Layout) -> list[Path]:
        """The stage's metrics plus the run's wall-time record (run_stage writes it)."""
        return _unique([*self.stage.metrics(layout, self.iteration, self.iterations), layout.timing(self.name)])

    def plots(self, layout: Layout) -> list[Path]:
        return _unique(self.stage.plots(layout, self.iteration, self.iterations))

    def outputs(self, layout: Layout) -> list[Path]:
        """Everything the run writes; all of it must exist when the run has finished."""
        return [*self.outs(layout), *self.metrics(layout), *self.plots(layout)]


def _unique(paths: Iterable[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))


def _previous(path_fn: Callable[[int], Path], i: int, first: int) -> list[Path]:
    """[path_fn(i - 1)] when iteration i has a predecessor at or after `first`, else []."""
    return [path_fn(i - 1)] if i - 1 >= first else []


# --- the stages ------------------------------------------------------------------------------------
# Declaration order is execution order within an iteration.

STAGES: tuple[Stage, ...] = (
    Stage(
        name="prepare_seed",
        function="duelguard.seed.assemble:prepare_seed_stage",
        doc="Seed records from the raw public corpora: map, normalise, dedup, split; data card.",
        when="first",
        params=("paths.raw_data", "paths.weights_cache", "seed"),
        deps=lambda L, i, n: [L.raw_data],
        outs=lambda L, i, n: [L.seed_dir],
        metrics=lambda L, i, n: [L.seed_card],
        plots=lambda L, i, n: [L.plots_dir("seed")],
    ),
    Stage(
        name="generate",
        function="duelguard.loop.generator:generate",
        doc="The generator (base model + the previous iteration's DPO adapter) writes new samples from seeds, "
            "unless the stop rule says the game has converged.",
        when="loop",
        params=("generator", "paths.weights_cache", "loop.stop_min_gain", "loop.stop_patience"),
        # The stop rule (iteration >= 2) reads every earlier classifier's suite metrics and whether the
        # previous iteration had stopped; seed steering reads the previous iteration's scored samples.
        deps=lambda L, i, n: [L.seed_split("train"), *_previous(L.generator_dir, i, 1),
                              *(L.eval_metrics(k) for k in range(i) if i >= 2), *_previous(L.generate_summary, i, 1),
                              *_previous(L.scored, i, 1)],
        outs=lambda L, i, n: [L.generated(i)],
        metrics=lambda L, i, n: [L.generate_summary(i)],
        gpu=True,
        model_cache=True,
    ),
    Stage(
        name="curate",
        function="duelguard.loop.curation:curate",
        doc="Filter the samples (length, language, echo, refusal, duplicates, contamination, then label "
            "fidelity: USE-m similarity to the seed, kept details, the frozen seed-only probe); hold the "
            "fixed game set out at iteration 1.",
        when="loop",
        params=("curation", "generator.languages", "seed.languages", "paths.weights_cache"),
        # The frozen label judge: iteration 0's probe (fitted on seed rows only).
        deps=lambda L, i, n: [L.generated(i), L.seed_dir, *L.curated_upto(i - 1), L.probe_dir(0),
                              *([L.game_set(1)] if i > 1 else [])],
        outs=lambda L, i, n: [L.curated(i), L.rejected(i), L.game_set(i), L.fidelity_sample(i)],
        metrics=lambda L, i, n: [L.curation_report(i)],
    ),
    Stage(
        name="score",
        function="duelguard.loop.game:score",
        doc="The previous classifier's training loss on every curated sample and on the fixed game set: "
            "the game's value.",
        when="loop",
        params=("classifier.loss", "classifier.predict_batch_size", "paths.weights_cache"),
        deps=lambda L, i, n: [L.curated(i), L.game_set(i), L.classifier_dir(i - 1)],
        outs=lambda L, i, n: [L.scored(i)],
        metrics=lambda L, i, n: [L.score_metrics(i)],
        model_cache=True,
    ),
    Stage(
        name="build_pairs",
        function="duelguard.loop.pairs:build_pairs",
        doc="DPO preference pairs: per generation prompt, a faithful sample the classifier got wrong vs. an "
            "unfaithful one or a faithful one it got right.",
        when="loop",
        params=("pairs", "generator.template", "generator.backbone", "paths.weights_cache"),
        # seed train: the tiny backbone's tokenizer corpus (chat-template prompts need the tokenizer);
        # rejected: the unfaithful samples curation dropped.
        deps=lambda L, i, n: [L.scored(i), L.rejected(i), L.seed_split("train")],
        outs=lambda L, i, n: [L.pairs(i)],
        metrics=lambda L, i, n: [L.pairs_metrics(i)],
        model_cache=True,
    ),
    Stage(
        name="train_generator",
        function="duelguard.loop.dpo:train_generator",
        doc="DPO (sigmoid + SFT term) of the generator's LoRA adapter on the pairs, continuing the previous adapter.",
        # Only the next iteration's generate reads the adapter: the last iteration trains none (~2.5 min of
        # a CPU demo's 25); `duelguard loop --iterations N+1` trains it when there is a next iteration.
        when="loop_but_last",
        # generator: the fixed prompts of the adapter-effect check are drawn and rendered as generation does.
        params=("dpo", "generator", "paths.weights_cache", "tracking"),
        deps=lambda L, i, n: [L.pairs(i), L.seed_split("train"), *_previous(L.generator_dir, i, 1)],
        outs=lambda L, i, n: [L.generator_dir(i)],
        metrics=lambda L, i, n: [L.dpo_metrics(i)],
        gpu=True,
        model_cache=True,
    ),
    Stage(
        name="train_classifier",
        function="duelguard.loop.turns:classifier_turn",
        doc="Classifier i and its probe on seed + curated synthetic data <= i; thresholds calibrated on "
            "seed dev + the suite's calib half.",
        when="every",
        # promotion.guard_sets: the sets classifier.guard_recall_margin's floor is measured on
        params=("classifier", "evaluate.max_examples_per_lang", "paths.weights_cache", "tracking", "promotion.guard_sets"),
        # the previous classifier: classifier.init_from=previous continues from it, and a stopped game
        # (generate's summary says so) carries it over unchanged; the seed-only one: classifier.anchor_members
        # and the recall floor (classifier.guard_recall_margin)
        deps=lambda L, i, n: [*L.classifier_training_files(i), L.seed_split("dev"),
                              *_previous(L.classifier_dir, i, 0),
                              *([L.classifier_dir(0), L.generate_summary(i)] if i >= 1 else [])],
        outs=lambda L, i, n: [L.classifier_dir(i)],  # its probe inside: L.probe_dir(i)
        metrics=lambda L, i, n: [L.train_metrics(i)],
        plots=lambda L, i, n: [L.plots_dir("train", i)],
        gpu=True,
        model_cache=True,
    ),
    Stage(
        name="evaluate",
        function="duelguard.evaluation.evaluate:evaluate_classifier",
        doc="Classifier i and its probe on the seed test sample and the suite's report half: metrics per "
            "language, category and source; an MLflow run.",
        when="every",
        params=("evaluate", "classifier.predict_batch_size", "paths.weights_cache", "tracking"),
        deps=lambda L, i, n: [L.classifier_dir(i), L.seed_split("test")],
        metrics=lambda L, i, n: [L.eval_metrics(i)],
        plots=lambda L, i, n: [L.plots_dir("eval", i)],
        gpu=True,
        model_cache=True,
    ),
    Stage(
        name="register",
        function="duelguard.registry.registry:register_classifier",
        doc="Log classifier i into its evaluate run and register it as a new model version.",
        when="every",
        params=("tracking", "promotion.eval_split"),
        deps=lambda L, i, n: [L.eval_metrics(i), L.classifier_dir(i)],
        metrics=lambda L, i, n: [L.registry_record(i)],
        side_effects=True,
    ),
    Stage(
        name="promote",
        function="duelguard.registry.registry:promote_stage",
        doc="Move the champion alias to version i if it passes the promotion rules; record the decision.",
        when="every",
        params=("promotion", "evaluate.max_examples_per_lang", "classifier.predict_batch_size", "tracking"),
        # Promotions are ordered: iteration i is judged against the champion iteration i-1 left, whose
        # record stands in for that registry state.
        deps=lambda L, i, n: [L.registry_record(i), L.eval_metrics(i), L.seed_split("test"),
                              *_previous(L.promotion_record, i, 0)],
        metrics=lambda L, i, n: [L.promotion_record(i)],
        side_effects=True,
    ),
    Stage(
        name="report",
        function="duelguard.reports:report_stage",
        doc="Per-iteration game metrics, loop plots, the loop report and the seed-only vs. loop ablation, "
            "from the stages' outputs (the last classifier is scored on the game set here).",
        when="last",
        params=("evaluate.sets", "classifier.loss", "classifier.predict_batch_size", "paths.weights_cache",
                "tracking"),
        deps=lambda L, i, n: [
            L.seed_split("train"), L.classifier_dir(n), *([L.game_set(1)] if n >= 1 else []),
            *(p for k in range(n + 1) for p in (L.train_metrics(k), L.eval_metrics(k))),
            *(p for k in range(1, n + 1) for p in (L.generated(k), L.curated(k), L.generate_summary(k),
                                                   L.curation_report(k), L.score_metrics(k), L.pairs_metrics(k))),
            *(L.dpo_metrics(k) for k in range(1, n)),  # the last iteration trains no generator
        ],
        metrics=lambda L, i, n: [L.game_metrics(k) for k in range(n + 1)],
        plots=lambda L, i, n: [L.plots_dir("loop"), L.ablation_markdown, L.ablation_plot, L.loop_report],
    ),
    Stage(
        name="export",
        function="duelguard.serving.export:export_stage",
        doc="The registry's champion as a Triton model repository; a registry without a champion is an "
            "error (nothing else is ever exported).",
        when="last",
        params=("serving", "tracking", "paths.weights_cache"),
        deps=lambda L, i, n: [L.classifier_dir(n), L.promotion_record(n)],
        outs=lambda L, i, n: [L.triton_repository],
        side_effects=True,
        # Locally `duelguard serve` exports on demand; the repository is a build product, not versioned.
        platforms=frozenset({"kfp"}),
    ),
)


def stage(name: str, stages: Sequence[Stage] = STAGES) -> Stage:
    """The stage called `name`."""
    for s in stages:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(s.name for s in stages)}")


def runs(iterations: int, platform: str | None = None, stages: Sequence[Stage] = STAGES) -> list[StageRun]:
    """Every stage run of an `iterations`-iteration loop in execution order (optionally one platform's)."""
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    chosen = [s for s in stages if platform is None or platform in s.platforms]
    order = [StageRun(s, 0, iterations) for s in chosen if s.when == "first"]
    for i in range(iterations + 1):
        order += [StageRun(s, i, iterations) for s in chosen
                  if s.when in ("every", "loop", "loop_but_last") and i in s.iterations(iterations)]
    order += [StageRun(s, iterations, iterations) for s in chosen if s.when == "last"]
    return order


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def producers(run_list: Sequence[StageRun], layout: Layout) -> dict[str, list[StageRun]]:
    """For each run, the earlier runs that write a path it reads (its upstream, from data alone).

    Raises SpecError if a run reads a path that no earlier run writes (other than paths.raw_data, the
    pipeline's one external input), or if two runs write overlapping paths.
    """
    written: list[tuple[Path, StageRun]] = []
    out: dict[str, list[StageRun]] = {}
    for run in run_list:
        upstream: list[StageRun] = []
        for dep in run.deps(layout):
            found = [w for path, w in written if _overlaps(dep, path)]
            if not found and dep != layout.raw_data:
                raise SpecError(f"stage run {run.name} reads {dep}, which no earlier stage run writes")
            upstream += [w for w in found if w not in upstream]
        out[run.name] = upstream
        for path in run.outputs(layout):
            clash = [w.name for p, w in written if _overlaps(path, p)]
            if clash:
                raise SpecError(f"stage run {run.name} writes {path}, which overlaps an output of {clash[0]}")
            written.append((path, run))
    return out


def stage_function(name: str, stages: Sequence[Stage] = STAGES) -> StageFn:
    """Import and return the function of the stage called `name`."""
    module, _, attr = stage(name, stages).function.partition(":")
    return getattr(importlib.import_module(module), attr)


def run_stage(name: str, params: Params, layout: Layout, iteration: int = 0) -> dict[str, Any]:
    """Run one stage (its function does its work: runners decide what to skip) and record its wall
    time at layout.timing(run name), read by bench/bench_loop.py whichever runner ran it."""
    from duelguard.fsio import atomic_write_json

    spec = stage(name)
    loop = spec.when in ("loop", "loop_but_last")
    if iteration < 0 or (loop and iteration == 0):
        raise ValueError(f"stage {name} runs at loop iterations >= {1 if loop else 0}, not {iteration}")
    run = StageRun(spec, iteration, params.loop.iterations)
    started = time.perf_counter()
    summary = stage_function(name)(params, layout, iteration)
    atomic_write_json(
        layout.timing(run.name),
        {"stage": name, "run": run.name, "iteration": iteration, "profile": params.profile,
         "seconds": round(time.perf_counter() - started, 3),
         "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    )
    return summary
