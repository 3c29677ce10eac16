"""The `train_classifier` stage: fit the classifier on seed + curated synthetic data, calibrate its
thresholds on the seed dev split, save it, and log the run to MLflow.

Two kinds of classifier (classifier.backbone.kind picks the kind of a fresh one): a sentence head
over a frozen encoder (the default; seconds per epoch, duelguard.classifier.sentence.fit_head) or a
token model fine-tuned by the loop below (`fit`).

A plain PyTorch loop rather than HF Trainer, so that every step is visible here:
- data: every seed train row + curated synthetic rows of iterations 1..i up to a share per language,
  with per-example weights that balance languages (duelguard.classifier.data);
- batches: length-grouped (shuffle, cut into buckets of BUCKET_BATCHES batches, sort each bucket by
  length, shuffle the batch order: little padding, still random), dynamically padded;
- optimisation: AdamW over the trainable parameters (the fresh head at `head_lr_multiplier` x the
  backbone's rate: it starts from random weights, the backbone from pretrained ones), gradient
  accumulation, gradient clipping, cosine schedule with linear warmup; bf16 autocast when `dtype: bfloat16`;
- `freeze_embeddings` freezes the input embedding matrix (Gemma's 262k x 640 table is 60% of the
  model's weights; freezing it saves its gradient and Adam state, a large share of CPU step time);
- `train_top_layers: N` also freezes all but the top N decoder layers (the CPU profile's lever on
  step time; the head and the final norm always train);
- `init_from: previous` continues from iteration i-1's classifier instead of the backbone.
- `anchor_members: N` (sentence heads, i >= 1) joins N members of the seed-only classifier's head,
  frozen, to the iteration's own before calibration (duelguard.classifier.sentence.anchored).
- `guard_recall_margin` (i >= 1): calibration lowers a language's threshold until it finds the
  seed-only classifier's share of unsafe prompts in long text, plus the margin (`RecallFloor`).
Everything random is seeded with `classifier.random_seed`.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from duelguard.classifier.loader import load_classifier
from duelguard.classifier.model import GuardClassifier
from duelguard.classifier.saved import is_classifier_dir
from duelguard.classifier.sentence import SentenceGuard, first_window, fit_head
from duelguard.classifier.thresholds import calibrate, language_offsets, recall_floor_offsets
from duelguard.config import Params
from duelguard.fsio import DataError, atomic_write_json
from duelguard.layout import Layout
from duelguard.records import read_records

BUCKET_BATCHES = 16
ANCHOR_ITERATION = 0  # classifier.anchor_members come from the seed-only classifier
STAGE = "train_classifier"


# data ------------------------------------------------------------------------------------------
def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches: shuffle, bucket, sort each bucket by length, cut, shuffle batch order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    bucket = batch_size * BUCKET_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start : start + bucket], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


# the loop --------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's generators from one seed: a head's initialisation, its splits and
    every training draw repeat exactly (the stage, and the benches that retrain as it does)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _autocast(dtype: str, device: Any) -> Any:
    """bf16 autocast when asked for and supported on the device, else a no-op context."""
    import contextlib

    import torch

    if dtype == "bfloat16" and (device.type == "cpu" or torch.cuda.is_bf16_supported()):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _apply_lora(model: Any, lora: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type="SEQ_CLS",
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        modules_to_save=["score"],
    )
    return get_peft_model(model, config)


def freeze_lower_layers(model: Any, top: int) -> None:
    """Freeze every transformer layer below the top `top` ones (and the embeddings): backward then
    stops at the first trainable layer, so a step costs roughly forward + top/n_layers of a full backward."""
    from duelguard.classifier.network import freeze_embeddings, transformer_layers

    layers = transformer_layers(model)
    if not 0 <= top <= len(layers):
        raise ValueError(f"classifier.train_top_layers must be in [0, {len(layers)}], got {top}")
    freeze_embeddings(model)
    for layer in layers[: len(layers) - top]:
        layer.requires_grad_(False)


def fit(
    clf: GuardClassifier,
    input_ids: list[list[int]],
    labels: np.ndarray,
    params: Params,
    weights: np.ndarray | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train clf.model in place on tokenised examples; returns {"losses": [...per optimizer step], ...}.

    `weights` (one per example, mean 1) scale each example's loss; `max_steps` stops early (the
    benchmark times a few steps of this exact loop).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    from duelguard.classifier.inference import pad_batch
    from duelguard.classifier.losses import loss_function
    from duelguard.classifier.network import head_parameters

    cfg = params.classifier
    seed_everything(cfg.random_seed)
    rng = random.Random(cfg.random_seed)
    model = clf.model
    device = next(model.parameters()).device
    if cfg.freeze_embeddings:
        from duelguard.classifier.network import freeze_embeddings

        freeze_embeddings(model)
    if cfg.train_top_layers is not None:
        freeze_lower_layers(model, cfg.train_top_layers)
    if cfg.lora.enabled:
        model = _apply_lora(model, cfg.lora)
    lengths = [len(ids) for ids in input_ids]
    batches_per_epoch = math.ceil(len(input_ids) / cfg.batch_size)
    total_micro = max(1, math.ceil(cfg.epochs * batches_per_epoch))
    total_steps = math.ceil(total_micro / cfg.grad_accum)
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
        total_micro = min(total_micro, total_steps * cfg.grad_accum)
    trainable = [p for p in model.parameters() if p.requires_grad]
    head = {id(p) for p in head_parameters(model)}
    groups = [
        {"params": [p for p in trainable if id(p) not in head], "lr": cfg.learning_rate},
        {"params": [p for p in trainable if id(p) in head], "lr": cfg.learning_rate * cfg.head_lr_multiplier},
    ]

    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps)
    loss_fn = loss_function(cfg.loss)
    pad_id = clf.tokenizer.pad_token_id
    target = torch.as_tensor(labels, dtype=torch.float32)
    example_weight = torch.as_tensor(np.ones(len(input_ids)) if weights is None else weights, dtype=torch.float32)

    def micro_batches():
        while True:
            yield from length_grouped_batches(lengths, cfg.batch_size, rng)

    losses: list[float] = []
    model.train()
    started = time.perf_counter()
    bar = tqdm(total=total_steps, desc="train classifier", unit="step", disable=not progress)
    batch_iter = micro_batches()
    running = 0.0
    for micro in range(total_micro):
        batch = next(batch_iter)
        ids, attention = pad_batch([input_ids[i] for i in batch], pad_id)
        with _autocast(cfg.dtype, device):
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits
        loss = (loss_fn(logits, target[batch].to(device)) * example_weight[batch].to(device)).mean()
        (loss / cfg.grad_accum).backward()
        running += float(loss.detach()) / cfg.grad_accum
        last_micro = micro == total_micro - 1
        if (micro + 1) % cfg.grad_accum == 0 or last_micro:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(running)
            running = 0.0
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    seconds = time.perf_counter() - started
    if cfg.lora.enabled:
        model = model.merge_and_unload()
    clf.model = model.eval()
    return {
        "losses": losses,
        "steps": len(losses),
        "micro_batches": total_micro,
        "seconds": round(seconds, 3),
        "steps_per_s": round(len(losses) / seconds, 4) if seconds > 0 else None,
        "seconds_per_step": round(seconds / max(1, len(losses)), 3),
    }


# the stage -------------------------------------------------------------------------------------
def plot_loss(losses: list[float], path: Path, title: str, val_losses: list[float] | None = None) -> Path:
    """Training loss per optimizer step (per epoch for a sentence head, with its validation loss) as a PNG."""
    from duelguard.plotting import pyplot, save_png

    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, lw=1.2, label="train")
    if val_losses:
        ax.plot(range(1, len(val_losses) + 1), val_losses, lw=1.2, label="held-out (unsafe BCE)")
        ax.legend()
    ax.set_xlabel("epoch" if val_losses else "optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path, tight=False)


def _initial_classifier(params: Params, layout: Layout, iteration: int, seed_texts: list[str] | None) -> Any:
    """The classifier to train: iteration i-1's (init_from: previous) or a fresh head on the backbone."""
    cfg = params.classifier
    if cfg.init_from == "previous" and iteration > 0:
        previous = layout.classifier_dir(iteration - 1)
        if not is_classifier_dir(previous):
            raise DataError(f"init_from=previous: {previous} has no trained classifier (train iteration {iteration - 1})")
        clf = load_classifier(previous)
        clf.max_length, clf.chunk_overlap, clf.long_input = cfg.max_length, cfg.chunk_overlap, cfg.long_input
        return clf
    from duelguard.backbones import resolve_backbone

    seed_everything(cfg.random_seed)  # the head's random init
    backbone_dir = resolve_backbone(cfg.backbone, str(layout.weights_cache), corpus=seed_texts)
    if cfg.backbone.kind == "sentence":
        from duelguard.encoder import ENCODER, ENCODER_DIM

        return SentenceGuard.fresh(ENCODER, ENCODER_DIM, cfg.head_hidden, cfg.head_dropout, cfg.max_length,
                                   cfg.chunk_overlap, cfg.long_input, cfg.default_threshold, cfg.head_members)
    return GuardClassifier.from_backbone(
        backbone_dir, cfg.max_length, cfg.chunk_overlap, cfg.default_threshold, pooling=cfg.pooling,
        long_input=cfg.long_input,
    )


def fit_classifier(params: Params, layout: Layout, iteration: int, records: list[dict[str, Any]],
                   train: list[dict[str, Any]], weights: np.ndarray, seed_texts: list[str] | None = None
                   ) -> tuple[Any, dict[str, Any]]:
    """Classifier `iteration`, initialised (classifier.init_from) and trained on `train` (member 0's
    draw of `records`, with its `weights`), language offsets cleared: raw scores, ready for
    calibrate_classifier. Returns (classifier, training history). The one training path of the train
    stage and of the benches that retrain a stage's classifier on other rows; `seed_texts` (the seed
    train texts) only trains a tiny backbone's tokenizer."""
    clf = _initial_classifier(params, layout, iteration, seed_texts)
    clf.language_offsets = {}  # raw scores while training and calibrating (a previous model carries its own)
    history = _fit(clf, train, weights, params, layout, records)
    if params.classifier.anchor_members and iteration >= 1:
        clf = _anchor(clf, params, layout)
        history["anchor"] = {"iteration": ANCHOR_ITERATION, "members": params.classifier.anchor_members}
    return clf, history


def _anchor(clf: Any, params: Params, layout: Layout) -> Any:
    """clf with classifier.anchor_members of the seed-only classifier's members joined, frozen
    (duelguard.classifier.sentence.anchored)."""
    from duelguard.classifier.sentence import anchored

    anchor_dir = layout.classifier_dir(ANCHOR_ITERATION)
    if not is_classifier_dir(anchor_dir):
        raise DataError(f"classifier.anchor_members={params.classifier.anchor_members}: {anchor_dir} has no trained "
                        f"classifier (train iteration {ANCHOR_ITERATION} first)")
    try:
        return anchored(clf, load_classifier(anchor_dir), params.classifier.anchor_members)
    except DataError as exc:
        raise DataError(f"classifier.anchor_members: {anchor_dir}: {exc}") from exc


def _fit(clf: Any, train: list[dict[str, Any]], weights: np.ndarray, params: Params, layout: Layout,
         records: list[dict[str, Any]]) -> dict[str, Any]:
    """Train either kind in place: a token model on its tokenised rows, or a sentence head on the
    (cached) encoder vectors of each row's first window, ensemble member k on its own draw of rows
    from `records` (`training_rows` with random_seed + k; member 0's is `train`): members that saw
    different synthetic samples, framings and context windows err apart, and their mean is steadier."""
    cfg = params.classifier
    labels = np.array([r["labels"] for r in train])
    if not isinstance(clf, SentenceGuard):  # the kind _initial_classifier chose or loaded
        enc = clf.tokenizer([r["text"] for r in train], truncation=True, max_length=cfg.max_length)["input_ids"]
        return fit(clf, enc, labels, params, weights=weights)
    from duelguard.classifier.sentence import head_members
    from duelguard.encoder import embed_cached

    clf.embed_cache = layout.weights_cache
    rows = [(train, weights)] + [training_rows(records, params, cfg.random_seed + k)
                                 for k in range(1, len(head_members(clf.model)))]
    draws = [(embed_cached([first_window(r["text"], cfg.max_length) for r in draw], layout.weights_cache, progress=True),
              np.array([r["labels"] for r in draw]), w) for draw, w in rows]
    return fit_head(clf, draws, cfg.learning_rate, cfg.batch_size, int(cfg.epochs),
                    cfg.early_stopping_patience, cfg.weight_decay, cfg.random_seed)


def calibration_rows(params: Params, layout: Layout) -> list[dict[str, Any]]:
    """The rows thresholds are fitted on: the frozen seed dev sample (evaluate.max_examples_per_lang
    per language) and the suite's calibration half. Never the rows any report or gate reads (the
    seed test split and the suite's report half)."""
    from duelguard.evalset import eval_sample
    from duelguard.suite import suite_records

    dev_path = layout.seed_split("dev")
    if not dev_path.exists():
        raise DataError(f"{dev_path}: the seed dev split is needed to calibrate thresholds (run prepare_seed)")
    return eval_sample(dev_path, params.evaluate.max_examples_per_lang) + suite_records("calib")


def training_set(params: Params, layout: Layout, iteration: int, seed: int | None = None
                 ) -> tuple[list[Path], list[dict[str, Any]], list[dict[str, Any]], np.ndarray]:
    """What classifier `iteration` trains on (duelguard.classifier.data): its files, the rows they hold,
    the training rows (composed, plus framed requests and context windows, drawn with `seed`, by
    default classifier.random_seed) and their weights."""
    from duelguard.classifier.data import training_files

    files = training_files(layout, iteration)
    records = [rec for path in files for rec in read_records(path)]
    return files, records, *training_rows(records, params, params.classifier.random_seed if seed is None else seed)


def training_rows(records: list[dict[str, Any]], params: Params, seed: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """One draw of training rows from `records` (composed, plus framed requests and context windows,
    all drawn with `seed`) and their language weights."""
    from duelguard.classifier.data import compose, context_windows, language_weights
    from duelguard.classifier.framings import framed_rows

    cfg = params.classifier
    train = compose(records, cfg.max_synthetic_share, seed)
    train += framed_rows(train, cfg.framing_augment, seed)
    train += context_windows(train, cfg.context_augment, cfg.max_length, seed)
    return train, language_weights([r["lang"] for r in train], cfg.language_balance)


def benign_in_context(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The benign suite prompts among calibration `rows`, each inside benign context (the calib half's
    own suite_context: the report half's never calibrates anything)."""
    from duelguard.suite import SOURCE
    from duelguard.suite.variants import in_context

    benign = [r for r in rows if r.get("source") == SOURCE and not any(r["labels"])]
    if not benign:
        raise DataError("classifier.max_context_calib_fpr is set but the calibration rows hold no benign suite "
                        "prompts to place in context")
    return in_context(benign)


@dataclass(frozen=True)
class RecallFloor:
    """What a loop classifier must find in long text: for each of promotion.guard_sets, its calibration
    side's unsafe prompts (`rows`) and the share of them per language (`recall`) the seed-only
    classifier finds at its own thresholds, plus classifier.guard_recall_margin."""

    rows: dict[str, list[dict[str, Any]]]
    recall: dict[str, dict[str, float]]


def recall_floor(params: Params, layout: Layout, iteration: int, margin: float | None = None,
                 reference: int = ANCHOR_ITERATION) -> RecallFloor | None:
    """The recall floor classifier `iteration` is calibrated to (None for the seed-only classifier, with
    guard_recall_margin null or without guard sets); `margin` overrides classifier.guard_recall_margin,
    `reference` (the seed-only classifier in the stage; another earlier one in the benches' what-ifs)
    is the classifier whose recall it is. The reference is scored as saved; its encoder vectors land in
    the weights cache, so the candidate's scoring of the same texts reuses them."""
    from duelguard.evalset import calibration_counterpart

    margin = params.classifier.guard_recall_margin if margin is None else margin
    if iteration <= reference or margin is None or not params.promotion.guard_sets:
        return None
    reference_dir = layout.classifier_dir(reference)
    if not is_classifier_dir(reference_dir):
        raise DataError(f"classifier.guard_recall_margin={margin}: {reference_dir} has no trained classifier "
                        f"(train iteration {reference} first)")
    ref = load_classifier(reference_dir, layout.weights_cache)
    rows, recall = {}, {}
    for name in params.promotion.guard_sets:
        rows[name] = [r for r in calibration_counterpart(name, params, layout) if any(r["labels"])]
        if not rows[name]:
            raise DataError(f"classifier.guard_recall_margin: the calibration side of {name!r} holds no unsafe prompts")
        probs = ref.predict_proba([r["text"] for r in rows[name]], batch_size=params.classifier.predict_batch_size,
                                     progress=True)
        found = (probs > np.asarray(ref.thresholds)).any(axis=1)
        langs = np.array([r["lang"] for r in rows[name]])
        recall[name] = {lang: min(1.0, float(found[langs == lang].mean()) + margin) for lang in sorted(set(langs))}
    return RecallFloor(rows, recall)


def calibrate_classifier(clf: Any, rows: list[dict[str, Any]], params: Params, progress: bool = False,
                         floor: RecallFloor | None = None) -> dict[str, Any]:
    """Set clf's thresholds (classifier.threshold_rule) and, with language_calibration, its language
    offsets from `rows`, scored raw (offsets cleared first), then lowered where `floor` asks
    (recall_floor); returns the calibration report. The one calibration of training and of the benches
    that recalibrate a model."""
    cfg = params.classifier
    if floor is not None and not cfg.language_calibration:
        raise ValueError("a recall floor moves language thresholds: it needs classifier.language_calibration")
    clf.language_offsets = {}
    probs = clf.predict_proba([r["text"] for r in rows], batch_size=cfg.predict_batch_size, progress=progress)
    clf.thresholds, report = calibrate(probs, np.array([r["labels"] for r in rows]), cfg.threshold_rule,
                                       cfg.default_threshold, cfg.threshold_floor, cfg.max_calib_fpr)
    if cfg.language_calibration:
        context = None
        if cfg.max_context_calib_fpr is not None:
            placed = benign_in_context(rows)
            scores = clf.predict_proba([r["text"] for r in placed], batch_size=cfg.predict_batch_size,
                                       progress=progress).max(axis=1)
            context = (scores, [r["lang"] for r in placed], cfg.max_context_calib_fpr)
        clf.language_offsets, report["languages"] = language_offsets(
            probs.max(axis=1), np.array([any(r["labels"]) for r in rows]), [r["lang"] for r in rows],
            float(clf.thresholds.max()), params.seed.languages, cfg.threshold_floor, cfg.max_calib_fpr, context)
        if floor is not None:
            offsets, clf.language_offsets = clf.language_offsets, {}  # raw scores, as above
            unsafe = {name: (clf.predict_proba([r["text"] for r in placed], batch_size=cfg.predict_batch_size,
                                               progress=progress).max(axis=1), [r["lang"] for r in placed])
                      for name, placed in floor.rows.items()}
            clf.language_offsets, report["recall_floor"] = recall_floor_offsets(
                offsets, float(clf.thresholds.max()), unsafe, floor.recall, cfg.threshold_floor)
    clf.threshold_rule = cfg.threshold_rule
    return report


def train_classifier(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Stage: train the probe and the classifier on seed + synthetic <= iteration, calibrate both on
    the calibration rows, save them, log to MLflow."""
    import mlflow
    from duelguard.classifier.data import composition
    from duelguard.tracking import data_hash, git_commit, mlflow_run

    cfg = params.classifier
    files, records, train, weights = training_set(params, layout, iteration)
    model_dir, metrics_path = layout.classifier_dir(iteration), layout.train_metrics(iteration)
    calib = calibration_rows(params, layout)
    seed_texts = [r["text"] for r in read_records(files[0])]
    d_hash = data_hash(files + [layout.seed_split("dev")])

    with mlflow_run(params, STAGE, iteration, data_files=files, log_sections=["classifier"], root=layout.root):
        probe, probe_summary = train_probe(train, calib, layout.weights_cache, cfg.random_seed, cfg.max_calib_fpr)
        clf, history = fit_classifier(params, layout, iteration, records, train, weights, seed_texts)

        report = calibrate_classifier(clf, calib, params, progress=True, floor=recall_floor(params, layout, iteration))
        clf.training = {
            "iteration": iteration,
            "data_hash": d_hash,
            "profile": params.profile,
            "backbone": cfg.backbone.model_dump(),
            "init_from": cfg.init_from if iteration > 0 else "base",
            "anchor": history.get("anchor"),
            "loss": cfg.loss,
            "steps": history["steps"],
            "n_examples": len(train),
            "git_commit": git_commit(layout.root),
        }
        clf.save(model_dir)
        probe.save(layout.probe_dir(iteration))  # inside the classifier's directory: it travels with it

        metrics = {
            "iteration": iteration,
            "n_examples": len(train),
            "n_rows_available": len(records),
            "examples_per_language": dict(sorted(Counter(r["lang"] for r in train).items())),
            "examples_per_origin": dict(sorted(Counter(r["origin"] for r in train).items())),
            "composition": composition(train),
            "steps": history["steps"],
            "seconds": history["seconds"],
            "steps_per_s": history["steps_per_s"],
            "seconds_per_step": history["seconds_per_step"],
            "rows_per_s": round(history["micro_batches"] * cfg.batch_size / history["seconds"], 2)
            if history["seconds"] else None,
            "first_loss": round(history["losses"][0], 6),
            "final_loss": round(history["losses"][-1], 6),
            "head_members": history.get("members"),  # sentence kind: each member's rows (its own draw), steps, time
            "anchor": history.get("anchor"),  # classifier.anchor_members: the seed-only members joined, frozen
            "thresholds": report,
            "probe": probe_summary,
        }
        atomic_write_json(metrics_path, metrics)
        png = plot_loss(history["losses"], layout.plots_dir("train", iteration) / "loss.png", f"classifier iteration {iteration}",
                        history.get("val_losses"))
        _log_to_mlflow(mlflow, history["losses"], metrics, png, metrics_path)
    return {"iteration": iteration, "model_dir": str(model_dir), **metrics}


def _log_to_mlflow(mlflow: Any, losses: list[float], metrics: dict[str, Any], png: Path, metrics_path: Path) -> None:
    """Loss per step (one batched call), the summary figures, the plot and the metrics JSON."""
    from mlflow.entities import Metric

    run = mlflow.active_run()
    now = int(time.time() * 1000)
    client = mlflow.MlflowClient()
    step_metrics = [Metric("train_loss", float(v), now, step) for step, v in enumerate(losses, 1)]
    for start in range(0, len(step_metrics), 1000):
        client.log_batch(run.info.run_id, metrics=step_metrics[start : start + 1000])
    figures = {
        "final_loss": metrics["final_loss"],
        "train_seconds": metrics["seconds"],
        "steps_per_s": metrics["steps_per_s"] or 0.0,
        "n_examples": metrics["n_examples"],
        "probe_calib_f1": metrics["probe"]["calib_f1"],
    }
    if "calib_f1" in metrics["thresholds"]:
        figures["calib_f1"] = metrics["thresholds"]["calib_f1"]
    mlflow.log_metrics(figures)
    mlflow.log_artifact(str(png), artifact_path="plots")
    mlflow.log_artifact(str(metrics_path), artifact_path="metrics")


def train_probe(train: list[dict[str, Any]], calib: list[dict[str, Any]], cache_dir: Path,
                seed: int, max_fpr: float | None) -> tuple[Any, dict[str, Any]]:
    """(probe, summary): the probe fitted on the classifier's training rows, its threshold calibrated
    on the classifier's calibration rows by the classifier's own rule (max F1 under the FPR ceiling)."""
    from duelguard.classifier.thresholds import best_f1_threshold, f1_score
    from duelguard.encoder import ENCODER, embed_cached
    from duelguard.probe import PROBE_C, Probe

    started = time.perf_counter()
    truth = np.array([any(r["labels"]) for r in train])
    probe = Probe.fit(embed_cached([r["text"] for r in train], cache_dir, progress=True), truth, PROBE_C, seed)
    calib_truth = np.array([any(r["labels"]) for r in calib])
    calib_scores = probe.scores(embed_cached([r["text"] for r in calib], cache_dir))
    probe.threshold, _ = best_f1_threshold(calib_scores, calib_truth, max_fpr=max_fpr)
    summary = {
        "encoder": ENCODER,
        "c": PROBE_C,
        "n_train": len(truth),
        "threshold": probe.threshold,
        "calib_f1": f1_score(calib_scores > probe.threshold, calib_truth),
        "seconds": round(time.perf_counter() - started, 2),
    }
    probe.training = summary
    return probe, summary
