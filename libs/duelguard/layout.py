"""Where every artefact lives, in one place: DVC stages, `duelguard loop`, KFP components and the
tests all ask this object for paths, so they read and write the same files for the same params.

    data/seed/{train,dev,test}.jsonl            seed records (prepare_seed)
    data/synthetic/iter_<i>/generated.jsonl    raw generator samples (generate)
    data/synthetic/iter_<i>/curated.jsonl      samples that survived curation (curate)
    data/synthetic/iter_<i>/scored.jsonl       curated samples + classifier loss (score)
    data/synthetic/iter_<i>/pairs.jsonl        DPO preference pairs (build_pairs)
    models/classifier/iter_<i>/                classifier trained on seed + synthetic <= i
    models/probe/iter_<i>/                     its floor: USE-m + logistic regression, same rows
    models/generator/iter_<i>/                 generator LoRA adapter after iteration i's DPO
    metrics/...  plots/...  reports/...        DVC metrics, PNG plots, markdown reports
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from duelguard.config import Params, expand
from duelguard.records import SPLITS


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
    def seed_card(self) -> Path:
        return self.metrics / "seed_card.json"

    # synthetic data per iteration ------------------------------------------------------------
    def synthetic_dir(self, iteration: int) -> Path:
        return self.data / "synthetic" / f"iter_{iteration}"

    def generated(self, iteration: int) -> Path:
        return self.synthetic_dir(iteration) / "generated.jsonl"

    def curated(self, iteration: int) -> Path:
        return self.synthetic_dir(iteration) / "curated.jsonl"

    def scored(self, iteration: int) -> Path:
        return self.synthetic_dir(iteration) / "scored.jsonl"

    def pairs(self, iteration: int) -> Path:
        return self.synthetic_dir(iteration) / "pairs.jsonl"

    def classifier_training_files(self, iteration: int) -> list[Path]:
        """Seed train split + the curated synthetic data of every iteration <= `iteration`."""
        return [self.seed_split("train")] + [self.curated(i) for i in range(1, iteration + 1)]

    # models -----------------------------------------------------------------------------------
    def classifier_dir(self, iteration: int) -> Path:
        return self.models / "classifier" / f"iter_{iteration}"

    def probe_dir(self, iteration: int) -> Path:
        """The USE-m + logistic-regression floor trained beside classifier_dir(iteration)."""
        return self.models / "probe" / f"iter_{iteration}"

    def generator_dir(self, iteration: int) -> Path:
        return self.models / "generator" / f"iter_{iteration}"

    # metrics / plots / reports ------------------------------------------------------------------
    def train_metrics(self, iteration: int) -> Path:
        return self.metrics / "train" / f"iter_{iteration}.json"

    def eval_metrics(self, iteration: int) -> Path:
        return self.metrics / "eval" / f"iter_{iteration}.json"

    def game_metrics(self, iteration: int) -> Path:
        return self.metrics / "game" / f"iter_{iteration}.json"

    def plots_dir(self, stage: str, iteration: int | None = None) -> Path:
        return self.plots / stage if iteration is None else self.plots / stage / f"iter_{iteration}"
