"""What each loop iteration reports: one metrics file per iteration, PNG plots across iterations,
and the seed-only vs. loop ablation.

Per iteration i, layout.game_metrics(i) gathers (from the stages' own outputs, so it can be rebuilt
at any time with `duelguard report`):

- generation: samples asked for and written, samples/s, and the stop rule's decision (stoprule.stop_decision);
- curation: survival overall, per filter and per language, the fidelity scores' distribution, the game set;
- game value on the FRESH samples (score stage: mean loss and error of classifier i-1 on iteration i's
  curated samples) and on the FIXED game set (classifier i on the samples iteration 1 held out: the
  figure that can show convergence, since its samples never change);
- pairs: by rule (vs. an unfaithful sample, vs. a correct one), drops; DPO: steps, pairs used, reward
  margin, the chosen/rejected log-probability margin before and after, and whether the adapter changes
  greedy outputs on fixed prompts;
- data: the classifier's training-set composition (language x origin x category) and language share;
- quality: unsafe-class F1 per language and per category on every evaluation set (evaluate stage),
  and the mean F1 over the suite's fr/es/de language x category cells (what the stop rule reads).

Iteration 0 (seed-only classifier) has only the game set, data and quality parts. Plots go to
layout.plots_dir("loop"); the ablation (on the suite's report half) to layout.ablation_markdown +
layout.ablation_plot; the per-iteration tables to layout.loop_report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from duelguard.config import Params
from duelguard.fsio import DataError, atomic_write_json, atomic_write_text, iter_jsonl, read_json
from duelguard.layout import Layout
from duelguard.plotting import pyplot, save_png
from duelguard.taxonomy import TARGET_LANGUAGES

# The languages the loop exists for (the seed is English-heavy; these are the scarce ones).
LOOP_LANGUAGES = ("fr", "es", "de")
# What the issue asks of the loop against the seed-only model (F1 points): fr/es/de up, English not down.
GOAL_FR_ES_DE_POINTS = 3.0
GOAL_EN_POINTS = -1.0


def _lang_order(lang: str) -> tuple[int, str]:
    """Target languages first, in their canonical order (en, fr, es, de), then the rest by code."""
    return (TARGET_LANGUAGES.index(lang) if lang in TARGET_LANGUAGES else len(TARGET_LANGUAGES), lang)


def _maybe_json(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.exists() else None


def _lang_counts(path: Path) -> Counter[str]:
    """Records per language of one records file (lines are counted, not validated: they were)."""
    counts: Counter[str] = Counter()
    for _, obj in iter_jsonl(path):
        counts[obj.get("lang", "?")] += 1
    return counts


def language_share(layout: Layout, iteration: int) -> dict[str, Any]:
    """Language mix of the classifier's training data at iteration i (paper Fig. 7b).

    `share` is over the examples train_classifier used (metrics/train/iter_<i>.json), the
    `available_*` counts over every record of seed train + curated <= i.
    """
    total: Counter[str] = Counter()
    synthetic: Counter[str] = Counter()
    for i, path in enumerate(layout.classifier_training_files(iteration)):
        if not path.exists():
            continue
        counts = _lang_counts(path)
        total.update(counts)
        if i > 0:
            synthetic.update(counts)
    n = sum(total.values())
    out: dict[str, Any] = {
        "n_available": n,
        "synthetic_available": sum(synthetic.values()),
        "available_counts": dict(sorted(total.items())),
        "synthetic_counts": dict(sorted(synthetic.items())),
    }
    # What the classifier actually trained on (train_classifier caps the examples, keeping synthetic
    # data first); fall back to the available data when the training metrics are not there.
    trained = _maybe_json(layout.train_metrics(iteration)) or {}
    used = trained.get("examples_per_language")
    counts = Counter(used) if used else total
    m = sum(counts.values())
    out["source"] = "train_metrics" if used else "training_files"
    out["n"] = m
    out["counts"] = dict(sorted(counts.items()))
    out["share"] = {lang: round(c / m, 6) for lang, c in sorted(counts.items())} if m else {}
    return out


def curation_survival(layout: Layout, iteration: int) -> dict[str, Any] | None:
    """Generated -> curated survival, overall and per language, and the curation stage's own counts
    (per filter and language, fidelity distribution, game set)."""
    generated, curated = layout.generated(iteration), layout.curated(iteration)
    if not (generated.exists() and curated.exists()):
        return None
    gen, cur = _lang_counts(generated), _lang_counts(curated)
    n_gen, n_cur = sum(gen.values()), sum(cur.values())
    filters = _maybe_json(layout.curation_report(iteration)) or {}
    return {
        "generated": n_gen,
        "curated": n_cur,
        "survival_rate": round(n_cur / n_gen, 6) if n_gen else None,
        "per_language": {
            lang: {"generated": gen[lang], "curated": cur[lang], "survival_rate": round(cur[lang] / gen[lang], 6)}
            for lang in sorted(gen)
        },
        "dropped": filters.get("dropped"),
        "dropped_per_language": {lang: b.get("dropped") for lang, b in (filters.get("per_language") or {}).items()},
        "fidelity": filters.get("fidelity"),
        "game_set": filters.get("game_set"),
    }


def eval_summary(layout: Layout, iteration: int, split: str = "suite") -> dict[str, Any] | None:
    """F1 per language and per category on one evaluation set, from the evaluate stage's metrics."""
    metrics = _maybe_json(layout.eval_metrics(iteration))
    if not metrics or split not in metrics:
        return None
    summary = metrics[split]
    detail = metrics.get("detail", {}).get(split, {})
    by_lang = detail.get("by_language", {})
    langs = sorted(by_lang, key=_lang_order)
    out = {
        "split": split,
        "avg_f1": summary.get("avg_f1"),
        "f1": summary.get("f1"),
        "f1_per_language": {lang: by_lang[lang].get("f1") for lang in langs},
        "auroc_per_language": {lang: by_lang[lang].get("auroc") for lang in langs},
        "auprc_per_language": {lang: by_lang[lang].get("auprc") for lang in langs},
        "category_accuracy_per_language": {lang: by_lang[lang].get("category_accuracy") for lang in langs},
        "per_category_f1": detail.get("overall", {}).get("per_category_f1", {}),
    }
    if split == "suite":
        from duelguard.loop.stoprule import suite_cell_f1

        out["fr_es_de_cell_f1"] = suite_cell_f1(layout, iteration)
        out["fpr_lookalike"] = summary.get("fpr_lookalike")
    return out


def game_set_value(params: Params, layout: Layout, iteration: int) -> dict[str, Any] | None:
    """Classifier `iteration` on the fixed game set: from the score stage that used it as the opponent
    (layout.score_metrics(i + 1)) or, for a classifier no score stage has used (the last), scored
    here. None when no game set exists yet (no loop iteration has been curated)."""
    from duelguard.loop.game import game_value, score_records
    from duelguard.records import read_records

    path = layout.game_set(1)
    if not path.exists():
        return None
    used = _maybe_json(layout.score_metrics(iteration + 1)) or {}
    if (used.get("game_set") or {}).get("classifier_iteration") == iteration:
        return {**used["game_set"], "source": "score stage"}
    from duelguard.classifier.loader import load_classifier
    from duelguard.classifier.saved import is_classifier_dir

    if not is_classifier_dir(layout.classifier_dir(iteration)):
        return None

    scored = score_records(load_classifier(layout.classifier_dir(iteration), layout.weights_cache), read_records(path),
                           params.classifier.loss, params.classifier.predict_batch_size)
    return {"classifier_iteration": iteration, **game_value(scored), "source": "report"}


def iteration_report(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Gather iteration i's metrics and write layout.game_metrics(i); returns them."""
    report: dict[str, Any] = {"iteration": iteration, "profile": params.profile}
    if iteration >= 1:
        score = _maybe_json(layout.score_metrics(iteration))
        report["game_value"] = (
            {k: score.get(k) for k in ("n", "mean_loss", "error_rate", "per_language", "per_class")} if score else None
        )
        report["pairs"] = _maybe_json(layout.pairs_metrics(iteration))
        dpo = _maybe_json(layout.dpo_metrics(iteration))
        report["dpo"] = (
            {k: dpo.get(k) for k in ("updated", "pairs_used", "steps", "reward_margin", "reward_accuracy", "loss",
                                     "step_logp_margin", "logp_margin", "adapter_effect", "steps_per_s",
                                     "wall_s", "reason")} if dpo else None
        )
        report["curation"] = curation_survival(layout, iteration)
        generate = _maybe_json(layout.generate_summary(iteration))
        report["generation"] = (
            {k: generate.get(k) for k in ("requested", "records", "empty", "samples_per_s", "generate_s", "stopped",
                                          "steering")}
            if generate else None
        )
    report["game_set"] = game_set_value(params, layout, iteration)
    trained = _maybe_json(layout.train_metrics(iteration)) or {}
    report["composition"] = trained.get("composition")
    report["language_share"] = language_share(layout, iteration)
    for split in params.evaluate.sets:
        report[split] = eval_summary(layout, iteration, split)
    atomic_write_json(layout.game_metrics(iteration), report)
    return report


def _f1(report: dict[str, Any], lang: str, split: str = "suite") -> float | None:
    summary = report.get(split) or {}
    return (summary.get("f1_per_language") or {}).get(lang)


def _nan(values: list[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def plot_loop(layout: Layout, reports: list[dict[str, Any]], split: str = "suite") -> list[Path]:
    """PNG plots across iterations: F1 per language, language share (stacked), game value."""
    plt = pyplot()
    out = layout.plots_dir("loop")
    iters = [r["iteration"] for r in reports]
    paths = []

    fig, ax = plt.subplots(figsize=(6.5, 4))
    langs = sorted({lang for r in reports for lang in ((r.get(split) or {}).get("f1_per_language") or {})},
                   key=_lang_order)
    for lang in [lang for lang in langs if lang in TARGET_LANGUAGES]:
        ax.plot(iters, _nan([_f1(r, lang, split) for r in reports]), marker="o", label=lang)
    ax.set(xlabel="iteration (0 = seed only)", ylabel=f"{split} F1 (unsafe)", title=f"{split} F1 per language")
    ax.set_xticks(iters)
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(save_png(fig, out / "f1_per_language.png"))

    fig, ax = plt.subplots(figsize=(6.5, 4))
    all_langs = sorted({lang for r in reports for lang in r["language_share"]["share"]}, key=_lang_order)
    bottom = [0.0] * len(reports)
    for lang in all_langs:
        share = [r["language_share"]["share"].get(lang, 0.0) for r in reports]
        ax.bar(iters, share, bottom=bottom, label=lang, width=0.6)
        bottom = [b + s for b, s in zip(bottom, share)]
    ax.set(xlabel="iteration", ylabel="share of training data", title="Language share of the classifier's data")
    ax.set_xticks(iters)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    paths.append(save_png(fig, out / "language_share.png"))

    # Game value: the fixed game set (classifier i, the same samples every iteration) beside the fresh
    # samples of each iteration (classifier i-1 on iteration i's samples, plotted at i-1).
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    fixed = [r for r in reports if r.get("game_set")]
    fresh = [r for r in reports if r.get("game_value") and r["game_value"].get("n")]
    if fixed:
        ax.plot([r["iteration"] for r in fixed], _nan([r["game_set"]["mean_loss"] for r in fixed]), marker="o",
                label="fixed game set")
        ax2.plot([r["iteration"] for r in fixed], _nan([r["game_set"]["error_rate"] for r in fixed]), marker="o",
                 label="fixed game set")
    if fresh:
        ax.plot([r["iteration"] - 1 for r in fresh], _nan([r["game_value"]["mean_loss"] for r in fresh]),
                marker="s", ls="--", label="fresh samples of iteration i+1")
        ax2.plot([r["iteration"] - 1 for r in fresh], _nan([r["game_value"]["error_rate"] for r in fresh]),
                 marker="s", ls="--", label="fresh samples of iteration i+1")
    ax.set(xlabel="classifier iteration", ylabel="mean training loss", title="Game value: loss")
    ax2.set(xlabel="classifier iteration", ylabel="error rate", title="Game value: error rate", ylim=(0, 1))
    for a in (ax, ax2):
        a.set_xticks(iters)
        a.grid(alpha=0.3)
        if fixed or fresh:
            a.legend(fontsize=8)
    paths.append(save_png(fig, out / "game_value.png"))
    return paths


def _fmt(v: float | None, pct: bool = True) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}" if pct else f"{v:+.1f}"


def _language_table(reports: list[dict[str, Any]], cells: Callable[[dict[str, Any]], list[str]], caption: str) -> list[str]:
    """Markdown lines: a caption, then one row per iteration's report with its per-language `cells`."""
    lines = ["", caption, "", "| model | " + " | ".join(TARGET_LANGUAGES) + " |",
             "|---|" + "---:|" * len(TARGET_LANGUAGES)]
    for r in reports:
        name = "seed only (iter 0)" if r["iteration"] == 0 else f"after iteration {r['iteration']}"
        lines.append(f"| {name} | " + " | ".join(cells(r)) + " |")
    return lines


def ablation(layout: Layout, reports: list[dict[str, Any]], split: str = "suite") -> dict[str, Any]:
    """Seed-only (iteration 0) vs. after each iteration, per language: layout.ablation_markdown + _plot.

    Returns the table: per iteration, F1 per target language, the fr/es/de average, and the
    English and fr/es/de deltas against the seed-only model (in F1 points).
    """
    rows = []
    base = next((r for r in reports if r["iteration"] == 0), None)
    for r in reports:
        f1 = {lang: _f1(r, lang, split) for lang in TARGET_LANGUAGES}
        loop_vals = [f1[lang] for lang in LOOP_LANGUAGES if f1[lang] is not None]
        avg = sum(loop_vals) / len(loop_vals) if loop_vals else None
        rows.append({"iteration": r["iteration"], "f1": f1, "avg_fr_es_de": avg})
    base_row = rows[0] if base is not None and rows else None
    for row in rows:
        def delta(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round(100 * (a - b), 2)

        row["delta_en_points"] = delta(row["f1"]["en"], base_row["f1"]["en"]) if base_row else None
        row["delta_fr_es_de_points"] = delta(row["avg_fr_es_de"], base_row["avg_fr_es_de"]) if base_row else None

    lines = [
        "# Ablation: seed-only classifier vs. after each loop iteration",
        "",
        f"Binary F1 (unsafe class, %) on the **{split}** evaluation set, per language. Iteration 0 is the",
        "classifier trained on the seed alone; iteration i adds the curated synthetic data of iterations <= i.",
        "Deltas are in F1 points against iteration 0.",
        "",
        "| model | " + " | ".join(TARGET_LANGUAGES) + " | fr/es/de avg | Δ fr/es/de | Δ en |",
        "|---|" + "---:|" * (len(TARGET_LANGUAGES) + 3),
    ]
    for row in rows:
        name = "seed only (iter 0)" if row["iteration"] == 0 else f"after iteration {row['iteration']}"
        cells = [_fmt(row["f1"][lang]) for lang in TARGET_LANGUAGES]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {_fmt(row['avg_fr_es_de'])} | "
            f"{_fmt(row['delta_fr_es_de_points'], pct=False)} | {_fmt(row['delta_en_points'], pct=False)} |"
        )

    def ranking_cells(r: dict[str, Any]) -> list[str]:
        summary = r.get(split) or {}
        return [f"{_fmt((summary.get('auroc_per_language') or {}).get(lang))} / "
                f"{_fmt((summary.get('auprc_per_language') or {}).get(lang))}" for lang in TARGET_LANGUAGES]

    lines += _language_table(reports, ranking_cells, "Threshold-free ranking quality on the same rows (AUROC / AUPRC, %): "
                             "a gain here is a better ranking, not a moved threshold.")
    lines += _language_table(
        reports, lambda r: [_fmt(((r.get(split) or {}).get("category_accuracy_per_language") or {}).get(lang))
                            for lang in TARGET_LANGUAGES],
        "Category accuracy (%): of the unsafe prompts each model flags, the share whose top category is one "
        "the prompt carries (what a gateway shows beside the flag).")
    if len(rows) > 1 and base_row:
        last = rows[-1]
        goal_loop = last["delta_fr_es_de_points"] is not None and last["delta_fr_es_de_points"] >= GOAL_FR_ES_DE_POINTS
        goal_en = last["delta_en_points"] is not None and last["delta_en_points"] >= GOAL_EN_POINTS
        lines += [
            "",
            f"Goal (fr/es/de average up >= {GOAL_FR_ES_DE_POINTS:g} points, English down <= {-GOAL_EN_POINTS:g} point) "
            f"after iteration "
            f"{last['iteration']}: **{'met' if goal_loop and goal_en else 'not met'}** "
            f"(fr/es/de {_fmt(last['delta_fr_es_de_points'], pct=False)}, en {_fmt(last['delta_en_points'], pct=False)}).",
        ]
    atomic_write_text(layout.ablation_markdown, "\n".join(lines) + "\n")

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(rows), 1)
    groups = list(TARGET_LANGUAGES) + ["fr/es/de avg"]
    for k, row in enumerate(rows):
        vals = [row["f1"][lang] for lang in TARGET_LANGUAGES] + [row["avg_fr_es_de"]]
        xs = [g + k * width for g in range(len(groups))]
        label = "seed only" if row["iteration"] == 0 else f"iter {row['iteration']}"
        ax.bar(xs, [float("nan") if v is None else v for v in vals], width=width, label=label)
    ax.set_xticks([g + width * (len(rows) - 1) / 2 for g in range(len(groups))], groups)
    ax.set(ylabel=f"{split} F1 (unsafe)", title="Ablation: seed-only vs. loop iterations")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_png(fig, layout.ablation_plot)
    return {"split": split, "rows": rows, "markdown": str(layout.ablation_markdown), "plot": str(layout.ablation_plot)}


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def loop_markdown(layout: Layout, reports: list[dict[str, Any]]) -> Path:
    """layout.loop_report: per iteration, what curation kept and why it dropped, the pairs, whether DPO
    moved the generator, the game value on the fixed game set, suite F1 per language, and the last
    training set's composition by language x category and by language x kind of text."""
    from duelguard.loop.curation import FILTERS

    lines = ["# The two-player loop, iteration by iteration", "",
             "Built by `duelguard report` from the stages' outputs (metrics/game/iter_<i>.json holds every figure).",
             "", "## Generation and curation", "",
             "| iter | asked | written | curated | game set | survival | " + " | ".join(FILTERS) + " |",
             "|---:|---:|---:|---:|---:|---:|" + "---:|" * len(FILTERS)]
    for r in reports:
        gen, cur = r.get("generation") or {}, r.get("curation") or {}
        if not gen and not cur:
            continue
        stopped = (gen.get("stopped") or {}).get("stop")
        dropped = cur.get("dropped") or {}
        lines.append(
            f"| {r['iteration']}{' (stopped)' if stopped else ''} | {_num(gen.get('requested'), '{}')} | "
            f"{_num(gen.get('records'), '{}')} | {_num(cur.get('curated'), '{}')} | "
            f"{_num((cur.get('game_set') or {}).get('held_out_here'), '{}')} | {_num(cur.get('survival_rate'), '{:.2f}')} | "
            + " | ".join(str(dropped.get(name, 0)) for name in FILTERS) + " |")
    steered = [r for r in reports if ((r.get("generation") or {}).get("steering") or {}).get("strata")]
    if steered:
        strata = list(dict.fromkeys(k for r in steered for k in r["generation"]["steering"]["strata"]))
        lines += ["", "## Where the seeds went (steering)", "",
                  "Per iteration: seeds drawn per stratum, and in brackets how often the previous classifier was "
                  "wrong on the previous iteration's samples there (wrong/scored; `generator.steer` of the seeds "
                  "follow those error rates from iteration 2 on).", "",
                  "| stratum | " + " | ".join(f"iter {r['iteration']}" for r in steered) + " |",
                  "|---|" + "---:|" * len(steered)]
        for name in strata:
            cells = []
            for r in steered:
                cell = r["generation"]["steering"]["strata"].get(name)
                cells.append("0" if cell is None else f"{cell['seeds']}" + (
                    f" ({cell['wrong']}/{cell['scored']})" if cell["scored"] else ""))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Pairs and DPO", "",
              "| iter | pairs | vs unfaithful | vs correct | no wrong sample | DPO steps | log-prob margin before → after "
              "| fixed prompts changed |", "|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in reports:
        pairs, dpo = r.get("pairs") or {}, r.get("dpo") or {}
        if not pairs and not dpo:
            continue
        margin, effect = dpo.get("logp_margin") or {}, dpo.get("adapter_effect") or {}
        moved = "not updated: " + str(dpo.get("reason")) if dpo.get("updated") is False else (
            f"{effect.get('changed')}/{effect.get('prompts')}" if effect else
            "no DPO: the last iteration (no next generation)" if r is reports[-1] and not dpo else "n/a")
        lines.append(f"| {r['iteration']} | {_num(pairs.get('pairs'), '{}')} | {_num(pairs.get('pairs_vs_unfaithful'), '{}')} | "
                     f"{_num(pairs.get('pairs_vs_correct'), '{}')} | {_num(pairs.get('no_wrong_sample'), '{}')} | "
                     f"{_num(dpo.get('steps'), '{}')} | {_num(margin.get('before'), '{:.2f}')} → "
                     f"{_num(margin.get('after'), '{:.2f}')} | {moved} |")
    lines += ["", "## Game value and quality", "",
              "Game set: the fixed faithful samples held out at iteration 1, scored by classifier i. Fresh: classifier "
              "i-1 on iteration i's own samples. Suite: unsafe-class F1 on the behavioural suite's report half.", "",
              "| classifier | game set loss | game set error | fresh loss | fresh error | suite F1 en | fr | es | de "
              "| fr/es/de cell F1 |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in reports:
        gs, gv = r.get("game_set") or {}, r.get("game_value") or {}
        f1 = (r.get("suite") or {}).get("f1_per_language") or {}
        lines.append(f"| {r['iteration']} | {_num(gs.get('mean_loss'))} | {_num(gs.get('error_rate'), '{:.2f}')} | "
                     f"{_num(gv.get('mean_loss'))} | {_num(gv.get('error_rate'), '{:.2f}')} | "
                     + " | ".join(_num(f1.get(lang), "{:.3f}") for lang in TARGET_LANGUAGES)
                     + f" | {_num((r.get('suite') or {}).get('fr_es_de_cell_f1'))} |")
    last = next((r for r in reversed(reports) if r.get("composition")), None)
    if last:
        comp = {lang: last["composition"][lang] for lang in sorted(last["composition"], key=_lang_order)}
        cats = list(dict.fromkeys(c for lang in comp.values() for c in lang.get("categories", {})))
        lines += ["", f"## Training set of classifier {last['iteration']}: rows per language x category (seed + synthetic)",
                  "", "| category | " + " | ".join(comp) + " |", "|---|" + "---:|" * len(comp)]
        for cat in cats:
            cells = []
            for lang in comp:
                n = comp[lang].get("categories", {}).get(cat, {})
                cells.append(f"{n.get('seed', 0)} + {n.get('synthetic', 0)}" if n else "0")
            lines.append(f"| {cat} | " + " | ".join(cells) + " |")
        kinds = list(dict.fromkeys(k for lang in comp.values() for k in lang.get("kinds", {})))
        if kinds:
            lines += ["", f"## Training set of classifier {last['iteration']}: rows per language x kind of text",
                      "", "Unsafe / safe rows, others + synthetic (a synthetic row is the kind of its seed; "
                      "\"in context\" and \"framed request\": rows training adds).", "",
                      "| kind | " + " | ".join(comp) + " |", "|---|" + "---:|" * len(comp)]
            for kind in kinds:
                cells = []
                for lang in comp:
                    n = comp[lang].get("kinds", {}).get(kind, {})
                    cells.append(" / ".join(
                        f"{sum(v for k, v in n.items() if k.endswith(f'_{side}') and not k.startswith('synthetic_'))} + "
                        f"{n.get(f'synthetic_{side}', 0)}" for side in ("unsafe", "safe")) if n else "0")
                lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    atomic_write_text(layout.loop_report, "\n".join(lines) + "\n")
    return layout.loop_report


def write_reports(params: Params, layout: Layout, iterations: list[int] | None = None,
                  log_to_mlflow: bool = True) -> dict[str, Any]:
    """(Re)build the per-iteration reports, the loop plots and the ablation; log them to MLflow.

    `iterations` defaults to every iteration whose classifier was evaluated.
    """
    if iterations is None:
        iterations = sorted(
            int(p.stem.removeprefix("iter_")) for p in layout.eval_metrics(0).parent.glob("iter_*.json")
            if p.stem.removeprefix("iter_").isdigit()
        ) if layout.eval_metrics(0).parent.exists() else []
    if not iterations:
        raise DataError(f"{layout.eval_metrics(0).parent}: no evaluated iteration to report on (run the loop first)")
    reports = [iteration_report(params, layout, i) for i in iterations]
    split = "suite" if "suite" in params.evaluate.sets else params.evaluate.sets[0]
    plots = plot_loop(layout, reports, split)
    table = ablation(layout, reports, split)
    summary = loop_markdown(layout, reports)
    if log_to_mlflow:
        import mlflow

        from duelguard.tracking import mlflow_run

        with mlflow_run(params, "report", max(iterations), root=layout.root):
            for path in plots:
                mlflow.log_artifact(str(path), artifact_path="plots/loop")
            mlflow.log_artifact(table["markdown"], artifact_path="reports")
            mlflow.log_artifact(str(summary), artifact_path="reports")
            mlflow.log_artifact(table["plot"], artifact_path="reports")
            for r in reports:
                gv, gs = r.get("game_value") or {}, r.get("game_set") or {}
                cur, dpo, pairs = r.get("curation") or {}, r.get("dpo") or {}, r.get("pairs") or {}
                step = r["iteration"]
                values = {"game_mean_loss": gv.get("mean_loss"), "game_error_rate": gv.get("error_rate"),
                          "game_set_mean_loss": gs.get("mean_loss"), "game_set_error_rate": gs.get("error_rate"),
                          f"{split}_avg_f1": (r.get(split) or {}).get("avg_f1"),
                          "suite_fr_es_de_cell_f1": (r.get("suite") or {}).get("fr_es_de_cell_f1"),
                          "curation_survival_rate": cur.get("survival_rate"), "pairs": pairs.get("pairs"),
                          "dpo_steps": dpo.get("steps"),
                          "dpo_logp_margin_before": (dpo.get("logp_margin") or {}).get("before"),
                          "dpo_logp_margin_after": (dpo.get("logp_margin") or {}).get("after"),
                          "dpo_outputs_changed": (dpo.get("adapter_effect") or {}).get("changed")}
                values.update({f"dropped_{k}": v for k, v in (cur.get("dropped") or {}).items()})
                values.update({f"share_{lang}": v for lang, v in r["language_share"]["share"].items()})
                values.update({f"{split}_f1_{lang}": v for lang, v in ((r.get(split) or {}).get("f1_per_language")
                                                                        or {}).items()})
                mlflow.log_metrics({k: float(v) for k, v in values.items() if v is not None}, step=step)
    return {"iterations": iterations, "plots": [str(p) for p in plots], "ablation": table, "loop": str(summary)}


def report_stage(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Stage `report`: the reports over iterations 0..`iteration` (the last one), logged to MLflow."""
    result = write_reports(params, layout, list(range(iteration + 1)))
    return {"iterations": result["iterations"], "ablation": result["ablation"]["markdown"], "rows": result["ablation"]["rows"],
            "loop": result["loop"]}
