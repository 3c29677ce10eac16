"""Can the guardrail be walked around? Unsafe-row recall and benign FPR on the suite's report half,
plain, disguised (duelguard.suite.variants.obfuscate) and inside benign context
(duelguard.suite.variants.in_context), per language, at the classifier's own calibrated thresholds.

    python bench/bench_robustness.py [--model models/classifier/iter_0] [--label after]

`--label` names the run inside bench/results/robustness.json (a "before" run made on an older
commit stays beside an "after" run of this one), and the table printed compares every label there.
Only `predict_proba` of the saved classifier is used, so the same script measures any commit.

`--cost` measures instead what sizes `classifier.long_input.max_words`: seconds to score one text of
1,000 to 5,000 words of distinct sentences (the seed's train rows, no embedding cache), and the
time to flag a 100,000-word text past the bound; written under "cost" in the same file.

`--grpc HOST:PORT` asks a running server (`duelguard serve`, the champion) instead: the padding probe
of duelguard.suite.bypass (four requests at the start, middle and end of 100 / 1,000 / 100,000 words
of a weather report, one request each), the padding alone, the requests disguised four ways, and a
short request sent while the 100,000-word ones are in flight; written under "grpc".
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "bench" / "results" / "robustness.json"
LANGS = ("en", "fr", "es", "de")


def rates(records: list[dict[str, Any]], flagged: np.ndarray) -> dict[str, Any]:
    """Recall on unsafe rows, FPR on look-alike and on everyday rows: overall and per language."""
    out: dict[str, Any] = {}
    for lang in (None, *LANGS):
        for group, key in (("unsafe", "recall"), ("lookalike", "fpr_lookalike"), ("everyday", "fpr_everyday")):
            idx = [i for i, r in enumerate(records) if r["group"] == group and (lang is None or r["lang"] == lang)]
            if idx:
                out[key if lang is None else f"{key}_{lang}"] = round(float(np.mean(flagged[idx])), 4)
    return out


def measure(model: Path) -> dict[str, Any]:
    from duelguard.classifier.loader import load_classifier
    from duelguard.suite import suite_records
    from duelguard.suite.variants import CONTEXT_WORDS, OBFUSCATIONS, in_context, obfuscate

    clf = load_classifier(model, Path.home() / ".cache" / "duelguard")
    thresholds = np.asarray(clf.thresholds)

    def flag(records: list[dict[str, Any]]) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        probs = clf.predict_proba([r["text"] for r in records], progress=True)
        return np.any(probs > thresholds, axis=1), time.perf_counter() - started

    report = suite_records("report")
    result: dict[str, Any] = {"model": str(model)}
    flagged, seconds = flag(report)
    result["plain"] = {**rates(report, flagged), "seconds": round(seconds, 1)}
    unsafe = [r for r in report if r["group"] == "unsafe"]
    for kind in OBFUSCATIONS:
        disguised = [{**r, "text": obfuscate(r["text"], kind)} for r in unsafe]
        flagged, seconds = flag(disguised)
        result[kind] = {**rates(disguised, flagged), "seconds": round(seconds, 1)}
    for words in CONTEXT_WORDS:
        placed = in_context(report, (words,))
        flagged, seconds = flag(placed)
        result[f"context_{words}"] = {**rates(placed, flagged), "seconds": round(seconds, 1),
                                      "words": int(sum(len(r["text"].split()) for r in placed))}
    return result


def cost(model: Path) -> dict[str, Any]:
    from duelguard.classifier.loader import load_classifier
    from duelguard.classifier.units import scoring_units
    from duelguard.records import read_records

    clf = load_classifier(model)  # no embedding cache: every unit is embedded
    rows = [r["text"].strip() for r in read_records(REPO_ROOT / "data" / "seed" / "train.jsonl")]
    words = " ".join(t if t[-1:] in ".!?" else t + "." for t in rows if t).split()
    clf.predict_scores(["warm up the encoder."])
    out: dict[str, Any] = {}
    for n in (1000, 2500, clf.long_input.max_words, 100_000):
        text = " ".join(words[:n])
        started = time.perf_counter()
        scores = clf.predict_scores([text])
        seconds = time.perf_counter() - started
        units = len(scoring_units(text, clf.max_length, clf.chunk_overlap, clf.long_input).texts)
        out[str(n)] = {"seconds": round(seconds, 3), "units": units, "too_long": bool(scores.too_long[0])}
        print(f"{n:>7} words: {units:>4} units, {1000 * seconds:8.1f} ms, too_long={bool(scores.too_long[0])}")
    return out


def over_grpc(url: str) -> dict[str, Any]:
    import threading

    from duelguard.serving.client import GuardServingClient
    from duelguard.suite.bypass import LENGTHS, REQUESTS, cases, cut_pad, pad
    from duelguard.suite.variants import OBFUSCATIONS, obfuscate

    probe = cases()
    short: dict[str, Any] = {}

    def ask_short() -> None:
        time.sleep(0.5)
        with GuardServingClient(url) as client:
            started = time.perf_counter()
            short["unsafe"] = client.classify_records([{"text": REQUESTS["de"]}])[0]["unsafe"]
            short["ms"] = round(1000 * (time.perf_counter() - started), 1)

    worker = threading.Thread(target=ask_short)
    with GuardServingClient(url) as client:
        worker.start()
        records, latency = [], []
        for *_, text in sorted(probe, key=lambda c: -c[1]):  # the 100,000-word ones first, beside the short one
            started = time.perf_counter()
            records += client.classify_records([{"text": text}])
            latency.append(1000 * (time.perf_counter() - started))
        worker.join()
        ordered = sorted(probe, key=lambda c: -c[1])
        alone = client.classify_records([{"text": pad(lang, n)} for lang in REQUESTS for n in (100, 1000)])
        disguised = {kind: [r["unsafe"] for r in client.classify_records(
            [{"text": obfuscate(t, kind)} for t in REQUESTS.values()])] for kind in OBFUSCATIONS}
        # the padding cut at exactly N words: an "end" request is glued to a sentence fragment
        cut = [c for c in cases(cut_pad) if c[1] < 100_000]
        cut_records = client.classify_records([{"text": c[3]} for c in cut])
    flagged = {f"{lang}/{n}": sum(r["unsafe"] for c, r in zip(ordered, records) if c[0] == lang and c[1] == n)
               for lang in REQUESTS for n in LENGTHS}
    out = {"url": url, "flagged_of_3": flagged, "padding_alone_flagged": sum(r["unsafe"] for r in alone),
           "padding_alone_n": len(alone), "disguised_flagged_of_4": {k: sum(v) for k, v in disguised.items()},
           "cut_padding_flagged": sum(r["unsafe"] for r in cut_records), "cut_padding_n": len(cut),
           "cut_padding_missed": [c[:3] for c, r in zip(cut, cut_records) if not r["unsafe"]],
           "short_request_beside_100k": short,
           "ms_per_length": {str(n): round(float(np.median([ms for c, ms in zip(ordered, latency) if c[1] == n])), 1)
                             for n in LENGTHS}}
    print(json.dumps(out, indent=1))
    return out


def table(runs: dict[str, dict[str, Any]]) -> str:
    rows = ["| slice | " + " | ".join(f"{label}: recall en/fr/es/de | look-alike FPR" for label in runs) + " |",
            "|---|" + "---|---|" * len(runs)]
    slices = [k for k in next(iter(runs.values())) if k != "model"]
    for name in slices:
        cells = []
        for run in runs.values():
            s = run.get(name, {})
            recall = " / ".join(f"{100 * s[f'recall_{lang}']:.1f}" if f"recall_{lang}" in s else "-" for lang in LANGS)
            fpr = f"{s['fpr_lookalike']:.3f}" if "fpr_lookalike" in s else "-"
            cells += [recall, fpr]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "classifier" / "iter_0")
    parser.add_argument("--label", default="after")
    parser.add_argument("--cost", action="store_true", help="measure the cost bound instead")
    parser.add_argument("--grpc", metavar="HOST:PORT", help="send the padding probe to a running server instead")
    args = parser.parse_args()
    runs = json.loads(OUT.read_text()) if OUT.exists() else {}
    from duelguard.fsio import atomic_write_json

    if args.cost or args.grpc:
        if args.cost:
            runs["cost"] = cost(args.model)
        if args.grpc:
            runs["grpc"] = over_grpc(args.grpc)
        atomic_write_json(OUT, runs)
    else:
        runs[args.label] = measure(args.model)
        atomic_write_json(OUT, runs)
        print(table({k: v for k, v in runs.items() if k not in ("cost", "grpc")}))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
