"""Where every artefact lives, in one place: stage functions, the stage spec (and so dvc.yaml and the
Kubeflow components), the CLI and the tests all ask this object for paths, so they read and write the
same files for the same params. No other module builds an artefact path.

    data/seed/{train,dev,test}.jsonl                seed records (prepare_seed)
    data/seed/audit.jsonl                          rows the label-noise audit flagged (prepare_seed)
    data/synthetic/iter_<i>/generated.jsonl        raw generator samples (generate)
    data/synthetic/iter_<i>/curated.jsonl          samples that survived curation (curate)
    data/synthetic/iter_<i>/rejected.jsonl         dropped samples and the filter that dropped each (curate)
    data/synthetic/iter_<i>/game_set.jsonl         the fixed game set, chosen at iteration 1 (curate)
    data/synthetic/iter_<i>/fidelity_sample.md     kept and dropped rows beside their seeds (curate)
    data/synthetic/iter_<i>/scored.jsonl           curated samples + classifier loss (score)
    data/synthetic/iter_<i>/pairs.jsonl            DPO preference pairs (build_pairs)
    models/classifier/iter_<i>/                    classifier trained on seed + synthetic <= i
    models/classifier/iter_<i>/probe/              its floor: USE-m + logistic regression, same rows
    models/generator/iter_<i>/                     generator LoRA adapter after iteration i's DPO
    metrics/seed_card.json                         the seed's data card (prepare_seed)
    metrics/<kind>/iter_<i>.json                   one small JSON per stage and iteration (train, eval,
                                                   registry, promotion, generate, curation, score,
                                                   pairs, dpo, game)
    metrics/timings/<stage run>.json               wall time of each stage run
    plots/<stage>[/iter_<i>]/*.png                 PNG plots (seed, train, eval, loop)
    reports/ablation.{md,png}                      seed-only vs. each iteration
    reports/loop.md                                the loop per iteration (survival, pairs, DPO, game set)

data/ and models/ are cached by DVC (pushed to the DVC remote); metrics/, plots/ and reports/ are small
and tracked by git (docs/contracts.md, "Versioning").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from duelguard.config import Params, expand
from duelguard.records import SPLITS

PROBE_SUBDIR = "probe"


def probe_dir_of(classifier_dir: Path) -> Path:
    """Where a classifier directory keeps its probe (duelguard.probe), so that a registered model carries
    its own floor: of an iteration's directory (Layout.probe_dir) or of a downloaded registry version."""
    return Path(classifier_dir) / PROBE_SUBDIR


@dataclass(frozen=True)
class Layout:
    root: Path
    data: Path
    models: Path
    metrics: Path
    plots: Path
    reports: Path
    raw_data: Path
    weights_cache: Path
    triton_repository: Path
    serving_state: Path

    @classmethod
    def from_params(cls, params: Params, root: str | Path = ".") -> Layout:
        root = Path(root).resolve()

        def under(p: str) -> Path:
            path = expand(p)
            return path if path.is_absolute() else root / path

        paths = params.paths
        return cls(
            root=root,
            data=under(paths.data),
            models=under(paths.models),
            metrics=under(paths.metrics),
            plots=under(paths.plots),
            reports=under(paths.reports),
            raw_data=under(paths.raw_data),
            weights_cache=expand(paths.weights_cache),
            triton_repository=under(params.serving.repository),
            serving_state=under(params.serving.state_dir),
        )

    # seed -------------------------------------------------------------------------------------
    @property
    def seed_dir(self) -> Path:
        return self.data / "seed"

    def seed_split(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.seed_dir / f"{split}.jsonl"

    @property
    def seed_audit(self) -> Path:
        """The seed rows the label-noise audit flagged (duelguard.seed.audit), for people to read."""
        return self.seed_dir / "audit.jsonl"

    @property
    def seed_card(self) -> Path:
        return self.metrics / "seed_card.json"

    @property
    def seed_card_plot(self) -> Path:
        return self.plots_dir("seed") / "seed_card.png"

    # synthetic data per iteration ------------------------------------------------------------
    def synthetic_dir(self, iteration: int) -> Path:
        return self.data / "synthetic" / f"iter_{iteration}"

    def generated(self, iteration: int) -> Path:
        return self.synthetic_dir(iteration) / "generated.jsonl"

    def curated(self, iteration: int) -> Path:
        return self.synthetic_dir(iteration) / "curated.jsonl"

    def rejected(self, iteration: int) -> Path:
        return self.synthetic_dir(iteration) / "rejected.jsonl"

    def game_set(self, iteration: int) -> Path:
        """The fixed game set: chosen at iteration 1, an identical copy at every later iteration."""
        return self.synthetic_dir(iteration) / "game_set.jsonl"

    def fidelity_sample(self, iteration: int) -> Path:
        """Kept and dropped samples beside their seeds, for people to read."""
        return self.synthetic_dir(iteration) / "fidelity_sample.md"

    def scored(self, iteration: int) -> Path:
        return self.synthetic_dir(iteration) / "scored.jsonl"

    def pairs(self, iteration: int) -> Path:
        return self.synthetic_dir(iteration) / "pairs.jsonl"

    def curated_upto(self, iteration: int) -> list[Path]:
        """The curated synthetic data of iterations 1..`iteration` (empty for the seed-only iteration 0)."""
        return [self.curated(i) for i in range(1, iteration + 1)]

    def classifier_training_files(self, iteration: int) -> list[Path]:
        """Seed train split + the curated synthetic data of every iteration <= `iteration`."""
        return [self.seed_split("train"), *self.curated_upto(iteration)]

    # models -----------------------------------------------------------------------------------
    def classifier_dir(self, iteration: int) -> Path:
        return self.models / "classifier" / f"iter_{iteration}"

    def probe_dir(self, iteration: int) -> Path:
        """The classifier's floor (USE-m + logistic regression on the same rows), kept inside the
        classifier's directory so that it travels with it (DVC, the MLflow registry): an old
        champion re-evaluated on a new set is compared with its own probe."""
        return probe_dir_of(self.classifier_dir(iteration))

    def generator_dir(self, iteration: int) -> Path:
        return self.models / "generator" / f"iter_{iteration}"

    # metrics: one small JSON per stage kind and iteration --------------------------------------
    def _iteration_metrics(self, kind: str, iteration: int) -> Path:
        return self.metrics / kind / f"iter_{iteration}.json"

    def train_metrics(self, iteration: int) -> Path:
        return self._iteration_metrics("train", iteration)

    def eval_metrics(self, iteration: int) -> Path:
        return self._iteration_metrics("eval", iteration)

    def registry_record(self, iteration: int) -> Path:
        """The register stage's record (name, version, run id, tracking URI)."""
        return self._iteration_metrics("registry", iteration)

    def promotion_record(self, iteration: int) -> Path:
        """The promote stage's decision (rules, metrics, whether the alias moved)."""
        return self._iteration_metrics("promotion", iteration)

    def generate_summary(self, iteration: int) -> Path:
        return self._iteration_metrics("generate", iteration)

    def curation_report(self, iteration: int) -> Path:
        """Per-filter counts of one iteration's curation."""
        return self._iteration_metrics("curation", iteration)

    def score_metrics(self, iteration: int) -> Path:
        return self._iteration_metrics("score", iteration)

    def pairs_metrics(self, iteration: int) -> Path:
        return self._iteration_metrics("pairs", iteration)

    def dpo_metrics(self, iteration: int) -> Path:
        return self._iteration_metrics("dpo", iteration)

    def game_metrics(self, iteration: int) -> Path:
        return self._iteration_metrics("game", iteration)

    @property
    def timings_dir(self) -> Path:
        return self.metrics / "timings"

    def timing(self, run_name: str) -> Path:
        """Wall time of one stage run (`run_name` as in the stage spec: prepare_seed, train_classifier_1...)."""
        return self.timings_dir / f"{run_name}.json"

    # plots and reports ------------------------------------------------------------------------
    def plots_dir(self, stage: str, iteration: int | None = None) -> Path:
        return self.plots / stage if iteration is None else self.plots / stage / f"iter_{iteration}"

    @property
    def ablation_markdown(self) -> Path:
        return self.reports / "ablation.md"

    @property
    def ablation_plot(self) -> Path:
        return self.reports / "ablation.png"

    @property
    def loop_report(self) -> Path:
        """The loop per iteration: survival by filter, pairs, DPO margin, game value, suite F1."""
        return self.reports / "loop.md"
