"""The `evaluate` stage: score a trained classifier, and its probe beside it, on the evaluation sets.

Four evaluation sets (`evaluate.sets`), none ever used to fit or calibrate anything:
- `test`: a frozen sample of the seed's test split. Per language, the records are ordered by
  sha1(record id) and the first `evaluate.max_examples_per_lang` are kept; the order depends only
  on the ids, so every iteration and a re-evaluation of an old champion see the same examples, and
  a sha256 of the chosen ids (`eval_set.<name>.hash`) proves it.
- `suite`: the report half of the behavioural suite (duelguard.suite): every harm
  category and benign look-alikes in every language, where the seed's fr/es/de splits hold hate
  speech only.
- `suite_context`: the same rows inside 100 / 400 / 1,000 words of benign text
  (duelguard.suite.variants): does the guard still find a request that is not alone?
- `suite_cut`: the same with the context cut mid-sentence, the row glued to the fragment.

Every figure is computed for the classifier (at its calibrated thresholds) and for its probe (the
USE-m + logistic-regression floor trained on the same rows, at its own calibrated threshold).
Outputs: layout.eval_metrics(i) (DVC metrics: a flat `summary` per set that `dvc metrics show`
displays and promotion reads, `detail` per language/source, `probe_detail`, and for the suite
`cells` / `probe_cells` per language x category), PNG plots under layout.plots_dir("eval", i) (the language x category heatmap
among them), and an MLflow run whose id the `register` stage uses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from duelguard import metrics as M
from duelguard.classifier.loader import load_classifier
from duelguard.config import Params
from duelguard.evalset import LONG_TEXT_SETS, eval_set_hash, evaluation_records
from duelguard.evaluation import plots
from duelguard.fsio import DataError, atomic_write_json
from duelguard.layout import Layout
from duelguard.suite import SOURCE as SUITE_SOURCE
from duelguard.taxonomy import CATEGORIES, TARGET_LANGUAGES

SUMMARY_KEYS = ("f1", "precision", "recall", "fpr", "auprc", "auroc")


def _slices(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """Row indices of each language, source and language/source slice."""
    groups: dict[str, dict[str, list[int]]] = {"by_language": defaultdict(list), "by_source": defaultdict(list),
                                               "by_language_source": defaultdict(list)}
    for i, rec in enumerate(records):
        groups["by_language"][rec["lang"]].append(i)
        groups["by_source"][rec["source"]].append(i)
        groups["by_language_source"][f"{rec['lang']}/{rec['source']}"].append(i)
    return {kind: {k: np.asarray(v) for k, v in sorted(g.items())} for kind, g in groups.items()}


def split_report(
    records: Sequence[dict[str, Any]],
    probs: np.ndarray,
    thresholds: np.ndarray,
    probe_scores: np.ndarray | None = None,
    probe_threshold: float | None = None,
) -> dict[str, Any]:
    """Metrics of one evaluation set: flat `summary` (DVC/MLflow/promotion), nested `detail`, and for
    suite records `cells` (language x category) and benign FPR per suite group."""
    labels = np.asarray([r["labels"] for r in records], dtype=bool).reshape(-1, len(CATEGORIES))
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, len(CATEGORIES))
    detail: dict[str, Any] = {"overall": M.guard_metrics(labels, probs, thresholds)}
    for kind, groups in _slices(records).items():
        detail[kind] = {name: M.guard_metrics(labels[idx], probs[idx], thresholds) for name, idx in groups.items()}
    summary = _summary(detail["overall"], detail["by_language"])
    # the classifier's alone: the probe scores unsafe / safe, no category
    summary["category_accuracy"] = detail["overall"]["category_accuracy"]
    summary.update({f"category_accuracy_{lang}": m["category_accuracy"] for lang, m in detail["by_language"].items()})
    report: dict[str, Any] = {"summary": summary, "detail": detail}
    truth = labels.any(axis=1)
    flagged, _ = M.unsafe_predictions(probs, thresholds)
    probe_flagged = None
    if probe_scores is not None:
        probe_scores = np.asarray(probe_scores, dtype=np.float64)
        probe_flagged = probe_scores > probe_threshold
        probe = {"overall": _binary(truth, probe_flagged, probe_scores), "by_language": {}}
        for lang, idx in _slices(records)["by_language"].items():
            probe["by_language"][lang] = _binary(truth[idx], probe_flagged[idx], probe_scores[idx])
        report["probe"] = probe
        summary.update({f"probe_{k}": v for k, v in _summary(probe["overall"], probe["by_language"]).items()})
    if records and all(r["source"] == SUITE_SOURCE for r in records):
        report["cells"] = suite_cells(records, truth, flagged, probs.max(axis=1))
        if probe_flagged is not None:
            report["probe_cells"] = suite_cells(records, truth, probe_flagged, probe_scores)
        summary.update(_group_fprs(records, flagged))
        if probe_flagged is not None:
            summary.update({f"probe_{k}": v for k, v in _group_fprs(records, probe_flagged).items()})
    return report


def _binary(truth: np.ndarray, flagged: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    out = M.binary_metrics(truth, flagged)
    out["auprc"] = M.average_precision(truth, score)
    out["auroc"] = M.auroc(truth, score)
    return out


def _summary(overall: dict[str, Any], by_language: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The flat figures of one scorer: overall P/R/F1/FPR/AUPRC, avg F1 over target languages, and
    each figure per language."""
    summary: dict[str, Any] = {key: overall[key] for key in SUMMARY_KEYS}
    summary["n"] = overall["n"]
    summary["avg_f1"] = M.mean_defined(by_language[lang]["f1"] for lang in TARGET_LANGUAGES if lang in by_language)
    langs = [lang for lang in TARGET_LANGUAGES if lang in by_language] + sorted(set(by_language) - set(TARGET_LANGUAGES))
    for lang in langs:
        for key in SUMMARY_KEYS:
            summary[f"{key}_{lang}"] = by_language[lang][key]
    return summary


def suite_cells(records: Sequence[dict[str, Any]], truth: np.ndarray, flagged: np.ndarray,
                score: np.ndarray) -> dict[str, dict[str, dict[str, Any]]]:
    """Per language x category: that category's unsafe prompts against its benign look-alikes
    (F1, precision, recall, FPR, AUPRC of the unsafe decision)."""
    cells: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, rec in enumerate(records):
        if rec["group"] in ("unsafe", "lookalike"):
            cells[rec["lang"]][rec["category"]].append(i)
    return {
        lang: {cat: _binary(truth[idx], flagged[idx], score[idx]) for cat, idx in sorted(
            ((c, np.asarray(v)) for c, v in by_cat.items()), key=lambda kv: int(kv[0][1:]))}
        for lang, by_cat in sorted(cells.items(), key=lambda kv: _lang_rank(kv[0]))
    }


def _group_fprs(records: Sequence[dict[str, Any]], flagged: np.ndarray) -> dict[str, float | None]:
    """Share of benign suite prompts flagged, per group (look-alikes, everyday) and language."""
    out: dict[str, float | None] = {}
    for group in ("lookalike", "everyday"):
        rows = [i for i, r in enumerate(records) if r["group"] == group]
        out[f"fpr_{group}"] = float(np.mean(flagged[rows])) if rows else None
        for lang in sorted({records[i]["lang"] for i in rows}, key=_lang_rank):
            idx = [i for i in rows if records[i]["lang"] == lang]
            out[f"fpr_{group}_{lang}"] = float(np.mean(flagged[idx]))
    return out


def _lang_rank(lang: str) -> tuple[int, str]:
    return (TARGET_LANGUAGES.index(lang) if lang in TARGET_LANGUAGES else len(TARGET_LANGUAGES), lang)


def evaluate_model(
    classifier: Any,
    records: Sequence[dict[str, Any]],
    batch_size: int | None = None,
    probe: Any | None = None,
    probe_vectors: np.ndarray | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Score `records` with a loaded classifier (and its probe, on the records' USE-m vectors);
    returns (split_report, classifier probabilities)."""
    if not records:
        raise DataError("evaluation sample is empty")
    probs = classifier.predict_proba([r["text"] for r in records], batch_size=batch_size, progress=True)
    thresholds = np.asarray(classifier.thresholds, dtype=np.float64)
    probe_scores = probe.scores(probe_vectors) if probe is not None else None
    report = split_report(records, probs, thresholds, probe_scores, probe.threshold if probe is not None else None)
    return report, np.asarray(probs)


def _plots(report: dict[str, Any], records: Sequence[dict[str, Any]], probs: np.ndarray,
           thresholds: np.ndarray, name: str, out_dir: Path) -> list[Path]:
    detail = report["detail"]
    truth = np.asarray([any(r["labels"]) for r in records])
    flagged, score = M.unsafe_predictions(probs, thresholds)
    curves = {"all": (*M.precision_recall_curve(truth, score)[:2], detail["overall"]["auprc"])}
    langs = np.asarray([r["lang"] for r in records])
    for lang in detail["by_language"]:
        mask = langs == lang
        curves[lang] = (*M.precision_recall_curve(truth[mask], score[mask])[:2], detail["by_language"][lang]["auprc"])
    paths = [
        plots.language_bars(detail["by_language"], f"{name}: unsafe-class metrics per language",
                            out_dir / f"{name}_by_language.png"),
        plots.category_bars(detail["overall"]["per_category_f1"], f"{name}: per-category F1",
                            out_dir / f"{name}_per_category_f1.png"),
        plots.pr_curves(curves, f"{name}: precision-recall of unsafe_score", out_dir / f"{name}_pr_curve.png"),
    ]
    if "cells" in report:
        paths.append(plots.cell_heatmaps(report, f"{name}: unsafe-class F1 per language x category",
                                         out_dir / f"{name}_cells_f1.png"))
        labels = np.asarray([r["labels"] for r in records], dtype=bool)
        accuracy = {lang: m["category_accuracy"] for lang, m in detail["by_language"].items()}
        paths.append(plots.category_confusion(labels, np.asarray(probs), flagged, accuracy,
                                              f"{name}: flagged unsafe prompts, own category x reported category",
                                              out_dir / f"{name}_category_confusion.png"))
    return paths


def _mlflow_metrics(summaries: dict[str, dict[str, Any]], details: dict[str, dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, summary in summaries.items():
        out.update({f"{name}_{k}": float(v) for k, v in summary.items() if v is not None})
        per_cat = details[name]["overall"]["per_category_f1"]
        out.update({f"{name}_f1_cat_{c}": float(v) for c, v in per_cat.items() if v is not None})
    return out


def evaluate_classifier(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Stage: evaluate models/classifier/iter_<i> and its probe on every evaluation set; metrics,
    plots, MLflow run."""
    import mlflow
    from duelguard.digest import model_digest
    from duelguard.encoder import embed_cached
    from duelguard.probe import Probe
    from duelguard.tracking import mlflow_run, tracking_uri

    model_dir = layout.classifier_dir(iteration)
    out_path = layout.eval_metrics(iteration)
    classifier = load_classifier(model_dir, layout.weights_cache)
    digest = model_digest(model_dir)  # the weights these metrics are about (checked at register)
    probe = Probe.load(layout.probe_dir(iteration))
    thresholds = np.asarray(classifier.thresholds, dtype=np.float64)
    summaries: dict[str, dict[str, Any]] = {}
    reports: dict[str, dict[str, Any]] = {}
    eval_sets: dict[str, dict[str, Any]] = {}
    plot_files: list[Path] = []
    plots_dir = layout.plots_dir("eval", iteration)
    for name in params.evaluate.sets:
        records = evaluation_records(name, params, layout)
        # The probe embeds a text whole, as one vector: inside 1,000 words of context it is a floor of
        # nothing, so the context sets are the classifier's alone.
        floor = None if name in LONG_TEXT_SETS else probe
        vectors = embed_cached([r["text"] for r in records], layout.weights_cache) if floor else None
        report, probs = evaluate_model(classifier, records, params.classifier.predict_batch_size, floor, vectors)
        summaries[name], reports[name] = report["summary"], report
        eval_sets[name] = {"n": len(records), "hash": eval_set_hash(records),
                           "max_examples_per_lang": params.evaluate.max_examples_per_lang}
        plot_files += _plots(report, records, probs, thresholds, name, plots_dir)

    uri = tracking_uri(params, layout.root)
    data_files = [layout.seed_split("test")] if "test" in params.evaluate.sets else []
    result: dict[str, Any] = {**summaries}
    with mlflow_run(params, "evaluate", iteration, data_files=data_files, log_sections=["evaluate"],
                    root=layout.root) as run:
        mlflow.log_metrics(_mlflow_metrics(summaries, {k: r["detail"] for k, r in reports.items()}))
        mlflow.set_tags({f"duelguard.eval_set_hash.{s}": e["hash"] for s, e in eval_sets.items()})
        for path in plot_files:
            mlflow.log_artifact(str(path), artifact_path="plots")
        result.update({
            "iteration": iteration,
            "model_dir": str(model_dir),
            "model_digest": digest,
            "thresholds": [float(t) for t in thresholds],
            "probe_threshold": probe.threshold,
            "eval_set": eval_sets,
            "mlflow_run_id": run.info.run_id,
            "mlflow_tracking_uri": uri,
            "detail": {k: r["detail"] for k, r in reports.items()},
            "probe_detail": {k: r["probe"] for k, r in reports.items() if "probe" in r},
            "cells": {k: r["cells"] for k, r in reports.items() if "cells" in r},
            "probe_cells": {k: r["probe_cells"] for k, r in reports.items() if "probe_cells" in r},
        })
        mlflow.log_dict(result, "eval_metrics.json")
    atomic_write_json(out_path, result)
    return {"metrics": str(out_path), "mlflow_run_id": result["mlflow_run_id"],
            **{s: summaries[s]["avg_f1"] for s in summaries}}
