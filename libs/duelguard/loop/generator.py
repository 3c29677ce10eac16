"""The `generate` stage: the generator LLM writes new multilingual samples from seed examples.

One iteration i:
1. Seeds: a deterministic sample (rng seeded by generator.random_seed + i) of seed TRAIN records.
   translate_create draws `generator.seeds_per_iteration` English seeds per language
   of the source kinds in `generator.seed_kinds` (instructions by default: the requests that fr/es/de
   lack, since their seed is hate-speech statements only), half safe and half unsafe, the unsafe half
   spread over the harm categories (evenly, and from iteration 2 `generator.steer` of it toward the
   categories the classifier got wrong: seed_quotas), and asks for each of `generator.languages` (with
   `generator.distinct_seeds`, each language its own seeds: target_languages); paraphrase
   (a task that is off by default) draws `generator.paraphrase_seeds` seeds of
   `generator.paraphrase_languages` (English in params.yaml), allocated and steered the same way within
   each language, and rewrites each in its own language. Seeds too long to be rewritten within `max_new_tokens` are not eligible
   (`max_seed_chars`), since a cut-off sample would only be dropped by curation's length filter.
2. Model: the base backbone in iteration 1; from iteration 2 on, the base with the previous
   iteration's DPO LoRA adapter (layout.generator_dir(i - 1), written by duelguard.loop.dpo) merged in.
3. Sampling: `n_samples` per (seed, language), drawn together, in batches per (task, language)
   (they share the few-shot prefix, which CTranslate2 computes once) sorted by length, on the engine of
   `generator.engine` (duelguard.loop.engines: CTranslate2 by default, converted once per model
   hash), temperature/top_p/top_k from params, stopped at the first newline; the engine is seeded
   from (random_seed, iteration) and the batches come in a fixed order, so a rerun gives the same samples.
4. Output: one record per non-empty sample, labels inherited from the seed, with provenance
   (template, task, generator, sample_index, seed_text, seed_lang) -> layout.generated(i), and a
   summary -> layout.generate_summary(i).

Before all that, iteration i >= 2 asks the stop rule (duelguard.loop.stoprule.stop_decision): when the game has
converged, the stage writes no sample and records the decision in its summary (`stopped`).

The generator backbone is resolved here for every stage that loads it (generator_base_dir), so the
DPO stage trains an adapter for exactly the model generation loads.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duelguard.config import Params
from duelguard.fsio import DataError, atomic_write_json
from duelguard.layout import Layout
from duelguard.loop import prompts
from duelguard.loop.engines import Engine
from duelguard.records import read_records, write_records
from duelguard.taxonomy import is_unsafe

# Characters per new token we can count on when deciding whether a seed fits in max_new_tokens
# (English ~4 chars/token, French/Spanish/German outputs run ~20% longer than their seed).
CHARS_PER_NEW_TOKEN = 3


@dataclass(frozen=True)
class Job:
    """One sample to draw: a seed, the language asked for, the task, and which of the n samples."""

    seed: dict[str, Any]
    lang: str
    task: prompts.Task
    sample_index: int

    def record_id(self, iteration: int) -> str:
        return f"{self.seed['id']}-i{iteration}-{self.lang}-{self.task}-{self.sample_index}"


def max_seed_chars(params: Params) -> int:
    """The longest seed (in characters) that a complete rewrite can fit in max_new_tokens."""
    return params.generator.max_new_tokens * CHARS_PER_NEW_TOKEN


def source_kind(record: dict[str, Any]) -> str | None:
    """"instruction" or "statement" for a record of a known seed source (duelguard.seed.sources)."""
    from duelguard.seed.sources import SOURCE_KINDS

    return SOURCE_KINDS.get(record.get("source", ""))


SAFE = -1  # the stratum of everyday safe seeds: primary_category of a label vector with no harm category on
LOOKALIKE = -2  # safe seeds with alarming words (a keyword rule fires: "How do I kill a Python process?")


def primary_category(labels: list[int]) -> int:
    """The first harm category on (index into taxonomy.CATEGORIES); SAFE for a safe record."""
    return next((i for i, on in enumerate(labels) if on), SAFE)


def stratum(record: dict[str, Any]) -> int:
    """What a seed (or a sample, by its seed's text) stands for when seeds are allocated: its primary harm
    category, LOOKALIKE for a safe English request that a keyword rule fires on, else SAFE."""
    from duelguard.seed.mapping import KEYWORD_RULES

    key = primary_category(record["labels"])
    text = record.get("seed_text", record["text"])
    if key == SAFE and record.get("seed_lang", record["lang"]) == "en" and any(r.fires(text) for r in KEYWORD_RULES):
        return LOOKALIKE
    return key


def stratum_name(key: int) -> str:
    from duelguard.taxonomy import CATEGORIES

    return {SAFE: "safe", LOOKALIKE: "safe look-alike"}.get(key) or CATEGORIES[key]


def failure_counts(layout: Layout, iteration: int) -> dict[int, tuple[int, int]]:
    """Where the classifier fails, per stratum (`stratum`: a harm category, safe look-alike or safe;
    seed_quotas steers between the harm categories, the safe counts are reported):
    (wrong, scored) from layout.scored(iteration - 1), i.e. classifier i-2 judging iteration i-1's
    curated samples before it ever trained on them. That is the freshest held-out judgement when
    iteration i generates: classifier i-1 has trained on those very samples. Empty for iteration 1
    (nothing scored yet) and after a stopped iteration (it scored nothing). A missing file is an error."""
    if iteration < 2:
        return {}
    counts: dict[int, tuple[int, int]] = {}
    path = layout.scored(iteration - 1)
    for n, rec in enumerate(read_records(path), 1):
        if not isinstance(rec.get("correct"), bool):
            raise DataError(f"{path} (record {n}): no boolean 'correct' field; rerun the score stage of iteration {iteration - 1}")
        key = stratum(rec)
        wrong, scored = counts.get(key, (0, 0))
        counts[key] = (wrong + (not rec["correct"]), scored + 1)
    return counts


def seed_quotas(rng: random.Random, sizes: dict[int, int], n: int, failures: dict[int, tuple[int, int]],
                steer: float, lookalike_share: float = 0.0) -> dict[int, int]:
    """Seeds per stratum: half safe, half spread over the harm categories (a model that sees unsafe
    requests and few safe ones learns "a request = unsafe"; measured: when steering also took safe
    seeds away, the loop model's FPR on safe text in context doubled). Of the safe half,
    `lookalike_share` goes to safe look-alikes (LOOKALIKE), the rest to everyday requests (SAFE).
    With failures, `steer` of the unsafe half goes to the harm categories in proportion to their
    smoothed error rate (wrong + 1) / (scored + 2), so a category the classifier got wrong 8 times in
    10 draws about twice the seeds of one it got wrong 3 times in 10, and a category nobody scored
    counts 1/2: every category keeps seeds. Seeds are handed out one at a time to the stratum furthest
    below its target that has seeds left (ties drawn by rng), so a small stratum's unmet share goes to
    the others."""
    keys = sorted(k for k, size in sizes.items() if size)
    if not keys:
        return {}
    safe = [k for k in keys if k in (SAFE, LOOKALIKE)]
    unsafe = [k for k in keys if k not in safe]
    if safe and unsafe:
        even = {k: 0.5 / len(unsafe) for k in unsafe}
        if len(safe) == 2:  # too few look-alikes: everyday requests make up the safe half
            share = min(0.5 * lookalike_share, sizes[LOOKALIKE] / max(n, 1))
            even.update({LOOKALIKE: share, SAFE: 0.5 - share})
        else:
            even[safe[0]] = 0.5
    else:
        even = {k: 1.0 / len(keys) for k in keys}
    weight = even
    if failures and steer > 0 and unsafe:
        rate = {k: (failures.get(k, (0, 0))[0] + 1) / (failures.get(k, (0, 0))[1] + 2) for k in unsafe}
        share, total = sum(even[k] for k in unsafe), sum(rate.values())
        weight = {k: even[k] if k in safe else (1 - steer) * even[k] + steer * share * rate[k] / total for k in keys}
    order = list(keys)
    rng.shuffle(order)
    quota = dict.fromkeys(keys, 0)
    for _ in range(min(n, sum(sizes[k] for k in keys))):
        room = [k for k in order if quota[k] < sizes[k]]
        pick = max(room, key=lambda k: n * weight[k] - quota[k])  # first of equals in rng's order
        quota[pick] += 1
    return quota


def select_seeds(params: Params, train: list[dict[str, Any]], task: prompts.Task, iteration: int,
                 failures: dict[int, tuple[int, int]] | None = None) -> list[dict[str, Any]]:
    """The seeds of one task for one iteration: deterministic given (random_seed, iteration, failures).

    translate_create draws `seeds_per_iteration` English seeds (times the number of `languages` with
    `distinct_seeds`: target_languages deals them out); paraphrase draws `paraphrase_seeds` from
    `paraphrase_languages`, split evenly between them. English seeds are of `seed_kinds` either way. Within
    a language, seeds are allocated over the strata (safe, look-alike, each harm category) by seed_quotas,
    steered by `failures` (failure_counts), so English paraphrases go where the classifier fails as
    translations do; fr/es/de seeds (hate speech) come out half safe, half hate."""
    gen = params.generator
    limit = max_seed_chars(params)
    rng = random.Random(f"{gen.random_seed + iteration}:{task}")
    per_seed = len(gen.languages) if gen.distinct_seeds else 1
    langs, n = (["en"], gen.seeds_per_iteration * per_seed) if task == "translate_create" else (
        sorted(gen.paraphrase_languages), gen.paraphrase_seeds)
    picked: list[dict[str, Any]] = []
    for k, lang in enumerate(langs):
        pool = sorted((r for r in train if r["lang"] == lang and len(r["text"]) <= limit
                       and (lang != "en" or gen.seed_kinds is None or source_kind(r) in gen.seed_kinds)),
                      key=lambda r: r["id"])
        by_stratum: dict[int, list[dict[str, Any]]] = {}
        for rec in pool:
            by_stratum.setdefault(stratum(rec), []).append(rec)
        share = n // len(langs) + (k < n % len(langs))
        quota = seed_quotas(rng, {key: len(v) for key, v in by_stratum.items()}, share,
                            failures or {}, gen.steer, gen.lookalike_share)
        picked.extend(rec for key in sorted(quota) for rec in rng.sample(by_stratum[key], quota[key]))
    return sorted(picked, key=lambda r: r["id"])


def target_languages(params: Params, task: prompts.Task, seeds: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The languages each seed (by id) is written in. Paraphrase: its own. translate_create: every one of
    `languages`, or with `distinct_seeds` one each, dealt in turn over the seeds sorted by stratum, so
    every language gets the same count (+-1) and the same mix of harm categories and safe kinds."""
    gen = params.generator
    if task != "translate_create":
        return {seed["id"]: [seed["lang"]] for seed in seeds}
    if not gen.distinct_seeds:
        return {seed["id"]: list(gen.languages) for seed in seeds}
    ordered = sorted(seeds, key=lambda r: (stratum(r), r["id"]))
    return {seed["id"]: [gen.languages[k % len(gen.languages)]] for k, seed in enumerate(ordered)}


def plan_jobs(params: Params, train: list[dict[str, Any]], iteration: int,
              failures: dict[int, tuple[int, int]] | None = None) -> list[Job]:
    """Every sample this iteration draws, in a fixed order: task, seed, language, sample index."""
    gen = params.generator
    jobs: list[Job] = []
    for task in gen.tasks:
        seeds = select_seeds(params, train, task, iteration, failures)
        langs_of = target_languages(params, task, seeds)
        for seed in seeds:
            for lang in langs_of[seed["id"]]:
                jobs.extend(Job(seed, lang, task, k) for k in range(gen.n_samples))
    return jobs


def adapter_dir(layout: Layout, iteration: int) -> Path | None:
    """The previous iteration's DPO adapter, if one was trained (none for iteration 1)."""
    if iteration <= 1:
        return None
    path = layout.generator_dir(iteration - 1)
    return path if (path / "adapter_config.json").exists() else None


def _generator_name(params: Params, layout: Layout, adapter: Path | None) -> str:
    """Provenance string: backbone plus the merged adapter's directory (relative to the root) or 'base'."""
    name = params.generator.backbone.name_or_path
    if adapter is None:
        return f"{name}:base"
    try:
        return f"{name}:{adapter.relative_to(layout.root)}"
    except ValueError:
        return f"{name}:{adapter}"


def generator_base_dir(params: Params, layout: Layout) -> str:
    """The generator backbone's local directory: what generation loads and DPO trains an adapter for.
    The tiny backbone's tokenizer is trained on the seed train texts."""
    from duelguard.backbones import resolve_backbone

    backbone = params.generator.backbone
    corpus = [r["text"] for r in read_records(layout.seed_split("train"))] if backbone.kind == "tiny" else None
    return resolve_backbone(backbone, str(layout.weights_cache), corpus)


def generator_tokenizer(params: Params, layout: Layout) -> Any:
    """The generator's tokenizer, prepared (pad token, chat template) as generation uses it."""
    from transformers import AutoTokenizer

    from duelguard.backbones import prepare_tokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(generator_base_dir(params, layout)))


def load_generator(params: Params, layout: Layout, adapter: Path | None) -> tuple[Any, Any]:
    """The causal LM (base, or base + merged LoRA adapter) and its tokenizer set up for generation."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from duelguard.backbones import prepare_tokenizer

    gen = params.generator
    path = generator_base_dir(params, layout)
    cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = {"dtype": getattr(torch, gen.dtype)}
    if gen.load_in_4bit:
        from transformers import BitsAndBytesConfig

        from duelguard.quant4bit import cpu_skip_modules

        # On an AVX512-BF16 CPU bitsandbytes repacks 4-bit layers on their first no-grad forward and
        # cannot repack every shape: those layers stay unquantised there (duelguard.quant4bit).
        skip = None if cuda else cpu_skip_modules(AutoConfig.from_pretrained(path))
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=kwargs["dtype"],
            llm_int8_skip_modules=skip,
        )
        kwargs["device_map"] = {"": 0} if cuda else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    if not gen.load_in_4bit and cuda:
        model = model.to("cuda")
    model.eval()
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    tokenizer.padding_side = "left"
    return model, tokenizer


def open_engine(params: Params, layout: Layout, adapter: Path | None, seed: int) -> tuple[Engine, Any, dict[str, Any]]:
    """The engine generation samples with (generator.engine), seeded, its tokenizer, and how it was
    opened (for ctranslate2: the conversion key and whether the cache had it)."""
    from duelguard.loop.engines import CTranslate2Engine, Sampling, TransformersEngine, converted_model

    gen = params.generator
    sampling = Sampling(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k,
                        max_new_tokens=gen.max_new_tokens, add_special_tokens=not prompts.is_chat(gen.template))
    if gen.engine == "transformers":
        model, tokenizer = load_generator(params, layout, adapter)
        return TransformersEngine(model, tokenizer, sampling, seed, gen.batch_size), tokenizer, {"engine": "transformers"}

    def materialise(target: Path) -> None:
        model, tok = load_generator(params, layout, adapter)
        model.save_pretrained(target)
        tok.save_pretrained(target)

    from transformers import AutoTokenizer

    from duelguard.backbones import prepare_tokenizer

    base = generator_base_dir(params, layout)  # resolved once: the tiny kind trains its tokenizer here
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(base))
    quantization = None if gen.compute_type == "auto" else gen.compute_type
    model_dir, conversion = converted_model(Path(base), adapter, quantization, layout.weights_cache, materialise)
    engine = CTranslate2Engine(model_dir, tokenizer, sampling, gen.compute_type, seed, gen.batch_size,
                               window=sliding_window(Path(base)))
    return engine, tokenizer, {"engine": "ctranslate2", "compute_type": gen.compute_type, **conversion}


def sliding_window(model_dir: Path) -> int | None:
    """The model's sliding attention window (config.json), or None if it attends to everything."""
    import json

    config = json.loads((model_dir / "config.json").read_text())
    config = config.get("text_config", config)
    if config.get("use_sliding_window") is False:
        return None
    return config.get("sliding_window")


def prefix_report(engine: Engine) -> dict[str, int]:
    """How many calls reused the prompts' cached prefix (CTranslate2 only; a miss is a tokenizer that
    merged across the prefix boundary, correct but slower)."""
    return {k: getattr(engine, k) for k in ("prefix_hits", "prefix_misses") if hasattr(engine, k)}


def draw(params: Params, engine: Engine, tokenizer: Any, jobs: list[Job], iteration: int) -> list[str]:
    """One raw completion per job (same order). The n samples of a (seed, language) are drawn together;
    prompts are batched per (task, language), so a batch shares the template's prefix, and by length
    within it (less padding). The sequence of calls is fixed, so a seeded engine gives the same
    completions on a rerun."""
    from tqdm import tqdm

    gen = params.generator
    prompts_of: dict[tuple[str, str, str], list[int]] = {}  # (task, lang, seed id) -> its jobs, by sample
    for i, j in enumerate(jobs):
        prompts_of.setdefault((j.task, j.lang, j.seed["id"]), []).append(i)
    if any(len(ix) != gen.n_samples for ix in prompts_of.values()):
        raise ValueError(f"every (task, language, seed) must have generator.n_samples = {gen.n_samples} jobs")
    rendered = {key: prompts.render(tokenizer, gen.template, jobs[ix[0]].task, jobs[ix[0]].seed["text"],
                                    jobs[ix[0]].lang, is_unsafe(jobs[ix[0]].seed["labels"]))
                for key, ix in prompts_of.items()}
    lengths = {key: len(text) for key, text in rendered.items()}
    per_call = max(1, engine.parallel // gen.n_samples)
    calls = []
    for group in sorted({(task, lang) for task, lang, _ in prompts_of}):
        keys = sorted((k for k in prompts_of if k[:2] == group), key=lambda k: (lengths[k], k[2]))
        prefix = prompts.shared_prefix(gen.template, *group)
        calls.extend((keys[s : s + per_call], prefix) for s in range(0, len(keys), per_call))
    # every call queued first, then awaited in order: the engine's workers never wait for each other
    pending = [(keys, engine.submit([rendered[k] for k in keys], n=gen.n_samples, shared_prefix=prefix))
               for keys, prefix in calls]
    completions: dict[int, str] = {}
    for keys, result in tqdm(pending, desc=f"generate iter {iteration} ({engine.name})", unit="batch"):
        completions.update(zip((i for k in keys for i in prompts_of[k]), result(), strict=True))
    return [completions[i] for i in range(len(jobs))]


def to_records(params: Params, jobs: list[Job], completions: list[str], iteration: int,
               generator_name: str) -> list[dict[str, Any]]:
    """Synthetic records from the completions (an empty sample gives no record): labels inherited from
    the seed, provenance kept for curation, pairs and people."""
    gen = params.generator
    records = []
    for job, completion in zip(jobs, completions, strict=True):
        text = prompts.postprocess(completion, prompts.end_markers(gen.template, job.task, job.lang))
        if not text:
            continue
        records.append(
            {
                "id": job.record_id(iteration),
                "text": text,
                "lang": job.lang,
                "labels": list(job.seed["labels"]),
                "source": "synthetic",
                "split": "train",
                "origin": "synthetic",
                "iteration": iteration,
                "parent_id": job.seed["id"],
                "task": job.task,
                "template": gen.template,
                "generator": generator_name,
                "sample_index": job.sample_index,
                "seed_text": job.seed["text"],
                "seed_lang": job.seed["lang"],
                "seed_source": job.seed.get("source"),
            }
        )
    return records


def steering_report(jobs: list[Job], failures: dict[int, tuple[int, int]], steer: float) -> dict[str, Any]:
    """Per stratum (harm category, safe look-alike, safe): how often the classifier was wrong on the
    previous samples, and how many seeds this iteration drew there (both tasks), for the summary
    and the loop report."""
    seeds = Counter(stratum(j.seed) for j in {(j.task, j.seed["id"]): j for j in jobs}.values())
    strata = sorted(set(seeds) | set(failures))
    return {
        "steer": steer if failures else 0.0,
        "strata": {stratum_name(k): {"scored": failures.get(k, (0, 0))[1], "wrong": failures.get(k, (0, 0))[0],
                                     "seeds": seeds[k]} for k in strata},
    }


def generate(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Stage `generate`: write layout.generated(iteration); returns a summary (samples/s included)."""
    from duelguard.loop.stoprule import stop_decision

    if iteration < 1:
        raise ValueError(f"generate runs in loop iterations >= 1, got iteration {iteration}")
    gen = params.generator
    train = read_records(layout.seed_split("train"))
    failures = failure_counts(layout, iteration)
    jobs = plan_jobs(params, train, iteration, failures)
    if not jobs:
        raise DataError(
            f"{layout.seed_split('train')}: no eligible seeds for tasks {gen.tasks} "
            f"(English seeds for translate_create, {gen.paraphrase_languages} seeds for paraphrase, "
            f"<= {max_seed_chars(params)} chars)"
        )
    decision = stop_decision(params, layout, iteration)
    if decision["stop"]:
        # The game has converged: this iteration is a documented no-op (see duelguard.loop.stoprule).
        write_records(layout.generated(iteration), [])
        summary = {"iteration": iteration, "stopped": decision, "requested": 0, "records": 0, "empty": 0,
                   "path": str(layout.generated(iteration))}
        atomic_write_json(layout.generate_summary(iteration), summary)
        return summary
    adapter = adapter_dir(layout, iteration)

    t0 = time.perf_counter()
    engine, tokenizer, opened = open_engine(params, layout, adapter, gen.random_seed + 1000 * iteration)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    completions = draw(params, engine, tokenizer, jobs, iteration)
    gen_s = time.perf_counter() - t1
    records = to_records(params, jobs, completions, iteration, _generator_name(params, layout, adapter))
    write_records(layout.generated(iteration), records)
    summary = {
        "iteration": iteration,
        "generator": _generator_name(params, layout, adapter),
        **opened,
        "template": gen.template,
        "tasks": list(gen.tasks),
        "stopped": decision,
        "seeds": len({(j.task, j.seed["id"]) for j in jobs}),
        "steering": steering_report(jobs, failures, gen.steer),
        "requested": len(jobs),
        "records": len(records),
        "empty": len(jobs) - len(records),
        "load_s": round(load_s, 2),
        "generate_s": round(gen_s, 2),
        "samples_per_s": round(len(jobs) / gen_s, 3) if gen_s > 0 else None,
        **prefix_report(engine),
        "path": str(layout.generated(iteration)),
    }
    atomic_write_json(layout.generate_summary(iteration), summary)
    return summary
