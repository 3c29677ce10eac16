"""The `evaluate` stage: score a trained classifier on a frozen sample of the seed's dev/test splits.

The sample (duelguard.evalset: per language, the first `evaluate.max_examples_per_lang` records by
sha1 of their id) is the same for every iteration and for a re-evaluation of an old champion; a
sha256 of the chosen ids (`eval_set.<split>.hash`) proves it.

Outputs: layout.eval_metrics(i) (DVC metrics: a flat summary per split that `dvc metrics show`
displays, plus a `detail` section per split x language x source), PNG plots under
layout.plots_dir("eval", i), and an MLflow run (metrics + plots) whose id the `register` stage uses
to attach the model to the run that measured it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from duelguard import metrics as M
from duelguard.config import Params
from duelguard.evalset import eval_sample, eval_set_hash
from duelguard.evaluation import plots
from duelguard.fsio import DataError, atomic_write_json
from duelguard.layout import Layout
from duelguard.taxonomy import CATEGORIES, TARGET_LANGUAGES

SUMMARY_KEYS = ("f1", "precision", "recall", "fpr", "auprc")


def _slices(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """Row indices of each language, source and language/source slice."""
    groups: dict[str, dict[str, list[int]]] = {"by_language": defaultdict(list), "by_source": defaultdict(list),
                                               "by_language_source": defaultdict(list)}
    for i, rec in enumerate(records):
        groups["by_language"][rec["lang"]].append(i)
        groups["by_source"][rec["source"]].append(i)
        groups["by_language_source"][f"{rec['lang']}/{rec['source']}"].append(i)
    return {kind: {k: np.asarray(v) for k, v in sorted(g.items())} for kind, g in groups.items()}


def split_report(records: Sequence[dict[str, Any]], probs: np.ndarray, thresholds: np.ndarray) -> dict[str, Any]:
    """Metrics of one split: flat `summary` (for DVC/MLflow/promotion) and nested `detail`."""
    labels = np.asarray([r["labels"] for r in records], dtype=bool).reshape(-1, len(CATEGORIES))
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, len(CATEGORIES))
    detail: dict[str, Any] = {"overall": M.guard_metrics(labels, probs, thresholds)}
    for kind, groups in _slices(records).items():
        detail[kind] = {name: M.guard_metrics(labels[idx], probs[idx], thresholds) for name, idx in groups.items()}
    overall = detail["overall"]
    summary: dict[str, Any] = {key: overall[key] for key in SUMMARY_KEYS}
    summary["n"] = overall["n"]
    langs = [lang for lang in TARGET_LANGUAGES if lang in detail["by_language"]]
    langs += [lang for lang in detail["by_language"] if lang not in TARGET_LANGUAGES]
    summary["avg_f1"] = M.mean_defined(
        detail["by_language"][lang]["f1"] for lang in TARGET_LANGUAGES if lang in detail["by_language"]
    )
    for lang in langs:
        for key in SUMMARY_KEYS:
            summary[f"{key}_{lang}"] = detail["by_language"][lang][key]
    return {"summary": summary, "detail": detail}


def require_classifier_dir(model_dir: Path) -> Path:
    """`model_dir` if it holds a saved classifier, else a clear ModelNotFoundError."""
    from duelguard.errors import ModelNotFoundError

    if not (Path(model_dir) / "duelguard.json").exists():
        raise ModelNotFoundError(f"{model_dir}: not a saved classifier (no duelguard.json); train it first")
    return Path(model_dir)


def load_classifier(model_dir: Path) -> Any:
    """GuardClassifier.load with a clear error when the directory is not a saved classifier."""
    from duelguard.classifier.model import GuardClassifier

    return GuardClassifier.load(require_classifier_dir(model_dir))


def evaluate_model(classifier: Any, records: Sequence[dict[str, Any]], batch_size: int | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Score `records` with a loaded GuardClassifier; returns (split_report, probabilities)."""
    if not records:
        raise DataError("evaluation sample is empty: the seed split has no records")
    probs = classifier.predict_proba([r["text"] for r in records], batch_size=batch_size, progress=True)
    thresholds = np.asarray(classifier.thresholds, dtype=np.float64)
    return split_report(records, probs, thresholds), np.asarray(probs)


def _plots(report: dict[str, Any], records: Sequence[dict[str, Any]], probs: np.ndarray,
           thresholds: np.ndarray, split: str, out_dir: Path) -> list[Path]:
    detail = report["detail"]
    truth = np.asarray([any(r["labels"]) for r in records])
    _, score = M.unsafe_predictions(probs, thresholds)
    curves = {"all": (*M.precision_recall_curve(truth, score)[:2], detail["overall"]["auprc"])}
    langs = np.asarray([r["lang"] for r in records])
    for lang in detail["by_language"]:
        mask = langs == lang
        curves[lang] = (*M.precision_recall_curve(truth[mask], score[mask])[:2], detail["by_language"][lang]["auprc"])
    return [
        plots.language_bars(detail["by_language"], f"{split}: unsafe-class metrics per language",
                            out_dir / f"{split}_by_language.png"),
        plots.category_bars(detail["overall"]["per_category_f1"], f"{split}: per-category F1",
                            out_dir / f"{split}_per_category_f1.png"),
        plots.pr_curves(curves, f"{split}: precision-recall of unsafe_score", out_dir / f"{split}_pr_curve.png"),
    ]


def _mlflow_metrics(summaries: dict[str, dict[str, Any]], details: dict[str, dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for split, summary in summaries.items():
        out.update({f"{split}_{k}": float(v) for k, v in summary.items() if v is not None})
        per_cat = details[split]["overall"]["per_category_f1"]
        out.update({f"{split}_f1_cat_{c}": float(v) for c, v in per_cat.items() if v is not None})
    return out


def evaluate_classifier(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Stage: evaluate models/classifier/iter_<i> on the frozen seed sample; metrics, plots, MLflow run."""
    import mlflow

    from duelguard.tracking import mlflow_run, tracking_uri

    model_dir = layout.classifier_dir(iteration)
    out_path = layout.eval_metrics(iteration)
    files = [layout.seed_split(s) for s in params.evaluate.splits]
    require_classifier_dir(model_dir)
    uri = tracking_uri(params, layout.root)
    classifier = load_classifier(model_dir)
    thresholds = np.asarray(classifier.thresholds, dtype=np.float64)
    summaries: dict[str, dict[str, Any]] = {}
    details: dict[str, dict[str, Any]] = {}
    eval_sets: dict[str, dict[str, Any]] = {}
    plot_files: list[Path] = []
    plots_dir = layout.plots_dir("eval", iteration)
    for split in params.evaluate.splits:
        records = eval_sample(layout.seed_split(split), params.evaluate.max_examples_per_lang)
        report, probs = evaluate_model(classifier, records, params.classifier.predict_batch_size)
        summaries[split], details[split] = report["summary"], report["detail"]
        eval_sets[split] = {"n": len(records), "hash": eval_set_hash(records),
                            "max_examples_per_lang": params.evaluate.max_examples_per_lang}
        plot_files += _plots(report, records, probs, thresholds, split, plots_dir)

    result: dict[str, Any] = {**summaries}
    with mlflow_run(params, "evaluate", iteration, data_files=files, log_sections=["evaluate"], root=layout.root) as run:
        mlflow.log_metrics(_mlflow_metrics(summaries, details))
        mlflow.set_tags({f"duelguard.eval_set_hash.{s}": e["hash"] for s, e in eval_sets.items()})
        for path in plot_files:
            mlflow.log_artifact(str(path), artifact_path="plots")
        result.update({
            "iteration": iteration,
            "model_dir": str(model_dir),
            "thresholds": [float(t) for t in thresholds],
            "eval_set": eval_sets,
            "mlflow_run_id": run.info.run_id,
            "mlflow_tracking_uri": uri,
            "detail": details,
        })
        mlflow.log_dict(result, "eval_metrics.json")
    atomic_write_json(out_path, result)
    return {"metrics": str(out_path), "mlflow_run_id": result["mlflow_run_id"],
            **{s: summaries[s]["avg_f1"] for s in summaries}}
