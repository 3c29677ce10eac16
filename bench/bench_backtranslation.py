"""Would back-translation catch what USE-m similarity misses? Measured on the hand-labelled rows.

    python bench/bench_backtranslation.py [--translator gemma|qwen] [--fixture tests/fixtures/fidelity_hand_labelled.jsonl]

Each generated row of the fidelity fixture is translated back into English by a generator on
CTranslate2 (Gemma-3-270M with the few-shot pattern reversed, or Qwen2.5-Coder-1.5B-Instruct asked in
chat), then compared with its English seed in two ways: USE-m cosine (English against English, where
the encoder is sharpest) and chrF (character 1-6-gram F-score, which sees a swapped or dropped word).
Printed and appended to bench/results/backtranslation.json: rows/s of the back-translation, and the
precision/recall of "keep if score >= t" against the hand labels over a sweep of t, beside the same for
the forward USE-m similarity curation uses today. A measurement for choosing a filter, not a filter yet.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from bench_generator import QWEN_CODER_BACKBONE

from duelguard.config import load_params
from duelguard.fsio import atomic_write_json, iter_jsonl
from duelguard.layout import Layout
from duelguard.loop import prompts

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "fidelity_hand_labelled.jsonl"
OUTPUT = REPO_ROOT / "bench" / "results" / "backtranslation.json"
SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def chrf(hypothesis: str, reference: str, max_n: int = 6, beta: float = 2.0) -> float:
    """chrF (Popović 2015): character n-gram F-beta over n = 1..max_n, whitespace removed, in [0, 1]."""
    hyp, ref = "".join(hypothesis.lower().split()), "".join(reference.lower().split())
    precisions, recalls = [], []
    for n in range(1, max_n + 1):
        h = Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
        r = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        if not h or not r:
            continue
        overlap = sum((h & r).values())
        precisions.append(overlap / sum(h.values()))
        recalls.append(overlap / sum(r.values()))
    if not precisions:
        return 0.0
    p, r = float(np.mean(precisions)), float(np.mean(recalls))
    return 0.0 if p + r == 0 else (1 + beta**2) * p * r / (beta**2 * p + r)


def back_prompt(template: str, tokenizer: Any, text: str, lang: str) -> str:
    """The request to translate `text` (in lang) back into English, for a few-shot or a chat model."""
    name = prompts.language_name(lang)
    if template == "chat":
        messages = [{"role": "user", "content": f"Translate this {name} request into English, word for word where "
                     f"possible. Do not answer it. Reply with the English translation only, on one line.\n\n"
                     f"{name} request: {prompts.one_line(text)}"}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    examples = prompts.FAITHFUL_EXAMPLES[lang]
    header = f"Requests written in {name}, each followed by the same request in English, every detail kept."
    blocks = [f"{name}: {b}\nEnglish: {a}" for a, b in examples] + [f"{name}: {prompts.one_line(text)}\nEnglish:"]
    return header + "\n\n" + "\n\n".join(blocks)


def _pr(rows: list[dict[str, Any]], keep: list[bool]) -> dict[str, Any]:
    kept = [r for r, k in zip(rows, keep, strict=True) if k]
    tp = sum(r["faithful"] for r in kept)
    relevant = sum(r["faithful"] for r in rows)
    return {"kept": len(kept), "precision": round(tp / len(kept), 3) if kept else None,
            "recall": round(tp / relevant, 3) if relevant else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--translator", choices=("gemma", "qwen"), default="gemma")
    parser.add_argument("--fixture", default=str(FIXTURE))
    parser.add_argument("--output", default=str(OUTPUT))
    args = parser.parse_args()

    from duelguard.encoder import embed
    from tqdm import tqdm

    from duelguard.loop.generator import open_engine

    params = load_params(REPO_ROOT / "params.yaml", profile="default")
    over: dict[str, Any] = {"engine": "ctranslate2", "max_new_tokens": 60}
    if args.translator == "qwen":
        over.update(template="chat", backbone=params.generator.backbone.model_copy(update=QWEN_CODER_BACKBONE))
    params = params.model_copy(update={"generator": params.generator.model_copy(update=over)})
    layout = Layout.from_params(params, REPO_ROOT)
    rows = [row for _, row in iter_jsonl(Path(args.fixture))]

    engine, tokenizer, _ = open_engine(params, layout, None, params.generator.random_seed)
    rendered = [back_prompt(params.generator.template, tokenizer, r["text"], r["lang"]) for r in rows]
    started = time.perf_counter()
    order = sorted(range(len(rendered)), key=lambda i: len(rendered[i]))  # similar lengths share a batch
    raw = [""] * len(rendered)
    for start in tqdm(range(0, len(order), engine.parallel), desc="back-translate", unit="batch"):
        chunk = order[start : start + engine.parallel]
        for i, text in zip(chunk, engine.complete([rendered[i] for i in chunk]), strict=True):
            raw[i] = text
    seconds = time.perf_counter() - started
    back = [prompts.postprocess(c, prompts.end_markers(params.generator.template, "translate_create", r["lang"]))
            for c, r in zip(raw, rows, strict=True)]

    seeds = embed([r["seed_text"] for r in rows])
    backs = embed(back)
    use_back = (seeds * backs).sum(axis=1)
    chrf_back = np.array([chrf(b, r["seed_text"]) for b, r in zip(back, rows, strict=True)])
    forward = np.array([r["similarity"] or 0.0 for r in rows])
    langid_ok = np.array([r["langid"] == r["lang"] for r in rows])

    def sweep(scores: np.ndarray) -> dict[str, Any]:
        return {str(t): _pr(rows, list((scores >= t) & langid_ok)) for t in SWEEP}

    result = {
        "translator": args.translator, "rows": len(rows), "faithful": sum(r["faithful"] for r in rows),
        "back_translate_s": round(seconds, 1), "rows_per_s": round(len(rows) / seconds, 3),
        "keep_if": {"forward_use_m": sweep(forward), "back_use_m": sweep(use_back), "back_chrf": sweep(chrf_back)},
        "examples": [{"seed": r["seed_text"], "text": r["text"], "back": b, "faithful": r["faithful"],
                      "back_use_m": round(float(u), 3), "back_chrf": round(float(c), 3)}
                     for r, b, u, c in list(zip(rows, back, use_back, chrf_back, strict=True))[:40]],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=1))
    out = Path(args.output)
    runs = json.loads(out.read_text()).get("runs", []) if out.exists() else []
    atomic_write_json(out, {"runs": [*runs, {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), **result}]})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
