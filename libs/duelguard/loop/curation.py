"""The `curate` stage: keep only generated samples that are worth training the classifier on.

Filters run in this FIXED order; a sample is counted under the first filter that drops it, so the
counts add up (input = kept + sum of dropped) and are comparable across iterations:

 1. too_short        fewer than curation.min_chars characters (a base model sometimes stops at once)
 2. wrong_language   py3langid (offline) over the project's languages + neighbours says the text
                     is not in the REQUESTED language, or is, with probability below
                     curation.langid_min_confidence (the label says fr: it must be French)
 3. length_ratio     len(sample) / len(seed) outside [min_length_ratio, max_length_ratio]: a much
                     shorter or longer text has lost or invented content, so the label may not hold
 4. echo             difflib ratio of the dedup keys of sample and seed >= echo_similarity: a copy of
                     the seed (or a same-language paraphrase that changed a word or two) adds nothing.
                     An edit ratio, not shingle Jaccard, because one changed word in a short prompt
                     drops 5-gram Jaccard far more than it changes the text
 5. refusal          a refusal or assistant disclaimer in en/fr/es/de ("I can't help", "Je ne peux pas
                     vous aider", "No puedo ayudarte", "Ich kann dir nicht helfen", "As an AI")
 6. answer           the model answered instead of writing a prompt ("Sure, here is", "Voici",
                     "Claro, aquí", "Hier ist", "Step 1")
 7. exact_duplicate  same dedup key (textnorm.dedup_key) as a seed record (train/dev/test), a curated
                     sample of an earlier iteration, or an earlier sample of this batch
 8. near_duplicate   MinHash-LSH (textnorm.NearDuplicateIndex, near_dup_threshold, minhash_num_perm)
                     against the same three sets
 9. contaminated     shares a word n-gram (decontam_ngram words) with a seed dev or test record: a
                     sample that quotes an evaluation text would leak it into training

Then label fidelity: does the sample still say what its seed said, so that the label it inherits holds?
Both checks use frozen judges that the classifier being trained cannot influence:

10. low_similarity   cosine similarity of the multilingual USE-m embeddings (duelguard.probe, trained to
                     put a sentence next to its translations) of seed and sample below
                     curation.min_similarity: the sample talks about something else
11. lost_details     a quoted string or a number of the seed is missing from the sample (curation.keep_details):
                     a translation keeps them verbatim, and the 270M generator's typical slip is to
                     swap the words it was asked to use ("rat", "hat", "mat" -> "rat", "hat", "mardi")
12. label_contradiction  the iteration-0 probe (USE-m + logistic regression fitted on seed rows only,
                     layout.probe_dir(0), never retrained) gives the OPPOSITE of the inherited label a
                     probability >= curation.max_label_contradiction: the sample reads as safe while
                     its label says unsafe, or the reverse

Survivors keep the seed's labels and the generator's provenance, plus `langid_confidence`,
`similarity` and `probe_unsafe`. Iteration 1 then holds a fixed GAME SET out of its survivors
(curation.game_set_per_language faithful samples per language, half safe, half unsafe, one per seed):
it is never trained on, and every classifier is scored on it (duelguard.loop.game), so the game's value is
measured on the same samples at every iteration. Later iterations carry an identical copy.

Writes layout.curated(i), layout.curation_report(i) (counts overall and per language, the fidelity
scores' distribution), layout.rejected(i) (each dropped sample with its filter and, where computed, its
fidelity scores: build_pairs uses the unfaithful ones as `rejected` DPO samples),
layout.fidelity_sample(i) (kept and dropped rows side by side with their seeds, for people to read)
and layout.game_set(i).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from duelguard import langid, textnorm
from duelguard.config import Params
from duelguard.fsio import DataError, atomic_write_json, atomic_write_text, write_jsonl
from duelguard.layout import Layout
from duelguard.records import SPLITS, read_records, write_records
from duelguard.taxonomy import CATEGORIES, is_unsafe

FILTERS: tuple[str, ...] = (
    "too_short",
    "wrong_language",
    "length_ratio",
    "echo",
    "refusal",
    "answer",
    "exact_duplicate",
    "near_duplicate",
    "contaminated",
    "low_similarity",
    "lost_details",
    "label_contradiction",
)
FIDELITY_FILTERS: tuple[str, ...] = ("low_similarity", "lost_details", "label_contradiction")
# The filters that say the GENERATOR failed at its job (wrote something else, in another language, an
# answer, a refusal, a copy): such samples are what DPO should push it away from. Duplicates and
# contamination say nothing about a sample's quality, so they are not among them.
UNFAITHFUL: tuple[str, ...] = (
    "too_short", "wrong_language", "length_ratio", "echo", "refusal", "answer", *FIDELITY_FILTERS,
)
# Rows per language and kind (kept / dropped for fidelity / dropped otherwise) in fidelity_sample.md.
SAMPLE_ROWS = 6

_APOS = "['’]"
REFUSAL_PATTERNS: tuple[str, ...] = (
    # English
    rf"\bI (?:can{_APOS}?t|cannot|can not|won{_APOS}t|will not|am unable to|{_APOS}m unable to|am not able to|"
    rf"{_APOS}m not able to) (?:help|assist|provide|comply|fulfil|fulfill|create|write|generate|do that|answer|"
    r"give|share|support|engage)",
    rf"\bI(?:{_APOS}m| am) sorry,? (?:but|I)\b",
    r"\bI apologi[sz]e,? but\b",
    r"\bas an AI\b",
    r"\bas an? (?:large )?language model\b",
    # French
    r"\bje ne (?:peux|pourrai|vais) pas (?:vous |t['’]|te )?(?:aider|répondre|fournir|donner|écrire|créer|générer|"
    r"faire (?:cela|ça)|accéder)",
    r"\b(?:je suis )?désolée?,? (?:mais )?je ne (?:peux|pourrai)",
    r"\ben tant qu['’](?:IA|intelligence artificielle|assistant)\b",
    r"\ben tant que modèle de langage\b",
    r"\bje ne suis pas en mesure de\b",
    r"\bje refuse de\b",
    # Spanish
    r"\bno (?:puedo|podré|voy a) (?:ayudar|ayudarte|ayudarle|proporcionar|darte|dar|escribir|crear|generar|hacer eso|"
    r"responder|cumplir)",
    r"\blo (?:siento|lamento),? (?:pero )?no (?:puedo|podré)",
    r"\bcomo (?:una )?(?:IA|inteligencia artificial|modelo de lenguaje)\b",
    r"\bno estoy en condiciones de\b",
    r"\bme niego a\b",
    # German
    r"\bich kann (?:dir |ihnen |euch )?(?:dabei |damit |hierbei |hier )?(?:nicht|keine) (?:helfen|weiterhelfen|"
    r"unterstützen|bereitstellen|geben|schreiben|erstellen|beantworten)",
    r"\b(?:es )?tut mir leid,? (?:aber )?ich (?:kann|darf|werde)",
    r"\bals (?:KI|künstliche Intelligenz|Sprachmodell|KI-Assistent)\b",
    r"\bich bin nicht in der Lage\b",
    r"\bich werde (?:dir |ihnen |euch )?(?:dabei )?nicht helfen\b",
)
# Openings of an answer (to the seed) rather than a new prompt, anchored at the start.
ANSWER_PATTERNS: tuple[str, ...] = (
    r"^(?:sure|certainly|of course|absolutely)\b[,!.:]?",
    rf"^here(?:{_APOS}s| is| are)\b",
    r"^(?:voici|voilà)\b",
    r"^(?:bien sûr|certainement|d['’]accord|avec plaisir)\b[,!.:]",
    r"^(?:claro|por supuesto|desde luego|con gusto)\b[,!.:]",
    r"^aquí (?:tienes|tiene|está|están)\b",
    r"^(?:hier (?:ist|sind|kommt)|natürlich|gerne|klar|selbstverständlich)\b[,!.:]?",
    r"^(?:step|étape|paso|schritt) 1\b",
)
_REFUSAL_RE = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PATTERNS), re.IGNORECASE)
_ANSWER_RE = re.compile("|".join(f"(?:{p})" for p in ANSWER_PATTERNS), re.IGNORECASE)


def is_refusal(text: str) -> bool:
    """A refusal or an assistant's self-description, in any of the four languages."""
    return bool(_REFUSAL_RE.search(text))


def is_answer(text: str) -> bool:
    """The text opens like an assistant's answer, not like a user's request or statement."""
    return bool(_ANSWER_RE.search(text.lstrip(" \"'«“-*")))


# Quoted spans (straight or curly double quotes; single quotes only around a whole word, not apostrophes)
# and numbers: what a faithful translation carries over verbatim.
_QUOTED_RE = re.compile(r'"([^"]{1,60})"|“([^”]{1,60})”|(?<![\w])\'([^\'\s][^\']{0,58})\'(?![\w])')
_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")


def seed_details(seed_text: str) -> list[str]:
    """The quoted strings and numbers of a seed, in order, without duplicates."""
    found = [next(g for g in m.groups() if g) for m in _QUOTED_RE.finditer(seed_text)]
    found += _NUMBER_RE.findall(seed_text)
    return list(dict.fromkeys(d.strip() for d in found if d.strip()))


def missing_details(text: str, seed_text: str) -> list[str]:
    """The seed's quoted strings and numbers that the sample does not contain (case-insensitive; numbers
    compared by their digits, so "3.5" matches the localised "3,5")."""
    low = text.casefold()
    digits = {re.sub(r"\D", "", n) for n in _NUMBER_RE.findall(text)}
    return [d for d in seed_details(seed_text)
            if not (re.sub(r"\D", "", d) in digits if _NUMBER_RE.fullmatch(d) else d.casefold() in low)]


def echo_similarity(text: str, seed_text: str) -> float:
    """Edit similarity (difflib ratio, 0..1) of the two texts' dedup keys."""
    return difflib.SequenceMatcher(None, textnorm.dedup_key(text), textnorm.dedup_key(seed_text), autojunk=False).ratio()


def length_ratio(text: str, seed_text: str) -> float:
    """Characters of the sample per character of its seed (normalised whitespace)."""
    return len(textnorm.normalize_text(text)) / max(1, len(textnorm.normalize_text(seed_text)))


@dataclass(frozen=True)
class Fidelity:
    """The frozen judges' view of one sample: how close it is to its seed, and what the seed-only
    probe thinks of its safety."""

    similarity: float  # cosine of the USE-m embeddings of seed and sample
    probe_unsafe: float  # iteration-0 probe's P(unsafe) of the sample
    seed_probe_unsafe: float  # the same for the seed (context for readers of the sample file)

    def contradiction(self, unsafe_label: bool) -> float:
        """The probe's probability of the class OPPOSITE to the inherited label."""
        return 1.0 - self.probe_unsafe if unsafe_label else self.probe_unsafe


def fidelity_scores(samples: Sequence[dict[str, Any]], probe: Any, cache_dir: Path) -> list[Fidelity]:
    """USE-m similarity to the seed and the frozen probe's P(unsafe), per sample (embeddings cached)."""
    import numpy as np

    from duelguard.encoder import embed_cached

    if not samples:
        return []
    texts = [r["text"] for r in samples]
    seeds = [r["seed_text"] for r in samples]
    vectors = embed_cached(texts + seeds, cache_dir)
    sample_vecs, seed_vecs = vectors[: len(texts)], vectors[len(texts) :]
    similarity = np.sum(sample_vecs * seed_vecs, axis=1)  # both L2-normalised
    probe_unsafe, seed_unsafe = probe.scores(sample_vecs), probe.scores(seed_vecs)
    return [
        Fidelity(round(float(s), 4), round(float(p), 4), round(float(q), 4))
        for s, p, q in zip(similarity, probe_unsafe, seed_unsafe, strict=True)
    ]


def load_judge(layout: Layout) -> Any:
    """The frozen label judge: the iteration-0 probe (fitted on seed rows only, in train_classifier -i 0)."""
    from duelguard.probe import Probe

    return Probe.load(layout.probe_dir(0))


@dataclass
class Reference:
    """What samples are deduplicated and decontaminated against."""

    exact: set[str] = field(default_factory=set)  # dedup keys of seed + earlier curated + kept so far
    near: textnorm.NearDuplicateIndex | None = None
    eval_ngrams: set[tuple[str, ...]] = field(default_factory=set)  # word n-grams of seed dev + test


def build_reference(
    params: Params, seed_texts: Iterable[str], earlier_texts: Iterable[str], eval_texts: Iterable[str]
) -> Reference:
    """Index the seed (all splits), earlier iterations' curated samples, and the dev/test n-grams."""
    cur = params.curation
    ref = Reference(near=textnorm.NearDuplicateIndex(cur.near_dup_threshold, cur.minhash_num_perm))
    for n, text in enumerate([*seed_texts, *earlier_texts]):
        key = textnorm.dedup_key(text)
        if key in ref.exact:
            continue
        ref.exact.add(key)
        ref.near.add(f"ref-{n}", text)
    for text in eval_texts:
        ref.eval_ngrams |= textnorm.ngrams(text, cur.decontam_ngram)
    return ref


def first_failing_filter(params: Params, rec: dict[str, Any], ref: Reference, lang_found: str, conf: float,
                         fidelity: Fidelity) -> str | None:
    """The name of the first filter (in FILTERS order) that drops `rec`, or None if it survives."""
    cur = params.curation
    text, seed_text = rec["text"], rec["seed_text"]
    if len(text.strip()) < cur.min_chars:
        return "too_short"
    if lang_found != rec["lang"] or conf < cur.langid_min_confidence:
        return "wrong_language"
    if not cur.min_length_ratio <= length_ratio(text, seed_text) <= cur.max_length_ratio:
        return "length_ratio"
    if echo_similarity(text, seed_text) >= cur.echo_similarity:
        return "echo"
    if is_refusal(text):
        return "refusal"
    if is_answer(text):
        return "answer"
    if textnorm.dedup_key(text) in ref.exact:
        return "exact_duplicate"
    assert ref.near is not None
    if ref.near.is_near_duplicate(text):
        return "near_duplicate"
    if textnorm.ngrams(text, cur.decontam_ngram) & ref.eval_ngrams:
        return "contaminated"
    if fidelity.similarity < cur.min_similarity:
        return "low_similarity"
    if cur.keep_details and missing_details(text, seed_text):
        return "lost_details"
    if fidelity.contradiction(is_unsafe(rec["labels"])) >= cur.max_label_contradiction:
        return "label_contradiction"
    return None


def apply_filters(
    params: Params, samples: list[dict[str, Any]], ref: Reference, fidelity: Sequence[Fidelity]
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """Run the filters on every sample; return (kept samples, [(dropped sample, filter name)]).

    `fidelity` holds each sample's fidelity_scores (same order). Duplicates within the batch: a
    sample is compared with the samples kept before it, so the first of a group of duplicates
    survives. `ref` is extended with every kept sample. Kept and dropped records both carry their
    langid confidence and fidelity scores.
    """
    from tqdm import tqdm

    if len(fidelity) != len(samples):
        raise ValueError(f"{len(samples)} samples but {len(fidelity)} fidelity scores")
    candidates = langid.candidate_languages(params.seed.languages, params.generator.languages)
    kept: list[dict[str, Any]] = []
    dropped: list[tuple[dict[str, Any], str]] = []
    assert ref.near is not None
    for n, (rec, fid) in enumerate(tqdm(list(zip(samples, fidelity)), desc="curate", unit="sample",
                                        disable=len(samples) < 500)):
        lang_found, conf = langid.identify(rec["text"], candidates)
        reason = first_failing_filter(params, rec, ref, lang_found, conf, fid)
        scored = {**rec, "langid": lang_found, "langid_confidence": round(conf, 4), "similarity": fid.similarity,
                  "probe_unsafe": fid.probe_unsafe, "seed_probe_unsafe": fid.seed_probe_unsafe}
        if reason is not None:
            dropped.append((scored, reason))
            continue
        ref.exact.add(textnorm.dedup_key(rec["text"]))
        ref.near.add(f"kept-{n}", rec["text"])
        kept.append(scored)
    return kept, dropped


def count_report(samples: list[dict[str, Any]], kept: list[dict[str, Any]], dropped: list[tuple[dict[str, Any], str]]) -> dict[str, Any]:
    """input, kept, dropped per filter and survival rate, overall and per requested language."""

    def block(inp: int, kept_n: int, reasons: list[str]) -> dict[str, Any]:
        return {
            "input": inp,
            "kept": kept_n,
            "dropped": {name: reasons.count(name) for name in FILTERS},
            "survival_rate": round(kept_n / inp, 4) if inp else 0.0,
        }

    langs = sorted({r["lang"] for r in samples})
    return {
        **block(len(samples), len(kept), [reason for _, reason in dropped]),
        "filter_order": list(FILTERS),
        "per_language": {
            lang: block(
                sum(r["lang"] == lang for r in samples),
                sum(r["lang"] == lang for r in kept),
                [reason for r, reason in dropped if r["lang"] == lang],
            )
            for lang in langs
        },
    }


def _quantiles(values: list[float]) -> dict[str, float] | None:
    import numpy as np

    if not values:
        return None
    qs = np.quantile(np.asarray(values, dtype=np.float64), [0.1, 0.25, 0.5, 0.75, 0.9])
    return {"n": len(values), **{f"p{int(q * 100)}": round(float(v), 4) for q, v in zip((0.1, 0.25, 0.5, 0.75, 0.9), qs)}}


def fidelity_distribution(kept: list[dict[str, Any]], dropped: list[tuple[dict[str, Any], str]]) -> dict[str, Any]:
    """Quantiles of the two fidelity scores over the samples that reached the fidelity filters (passed
    filters 1-9), overall and per language: what the thresholds are calibrated on."""
    reached = kept + [r for r, reason in dropped if reason in FIDELITY_FILTERS]

    def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "similarity": _quantiles([r["similarity"] for r in rows]),
            "label_contradiction": _quantiles(
                [1.0 - r["probe_unsafe"] if is_unsafe(r["labels"]) else r["probe_unsafe"] for r in rows]),
        }

    return {
        **summary(reached),
        "per_language": {lang: summary([r for r in reached if r["lang"] == lang])
                         for lang in sorted({r["lang"] for r in reached})},
    }


def _rank(record_id: str) -> str:
    return hashlib.sha1(record_id.encode("utf-8")).hexdigest()


def select_game_set(kept: list[dict[str, Any]], per_language: int) -> list[dict[str, Any]]:
    """The fixed game set: per language up to `per_language` kept samples, half unsafe and half safe
    (a short class leaves its share to the other), at most one per seed, taken in sha1(id) order so the
    choice depends on nothing but the samples."""
    out: list[dict[str, Any]] = []
    for lang in sorted({r["lang"] for r in kept}):
        ranked = sorted((r for r in kept if r["lang"] == lang), key=lambda r: _rank(r["id"]))
        quota = {True: (per_language + 1) // 2, False: per_language // 2}
        used: set[str] = set()
        picked: list[dict[str, Any]] = []
        for balanced in (True, False):  # first within each class's quota, then whatever is left
            for rec in ranked:
                unsafe = is_unsafe(rec["labels"])
                if len(picked) == per_language or rec["parent_id"] in used or (balanced and not quota[unsafe]):
                    continue
                used.add(rec["parent_id"])
                quota[unsafe] -= 1
                picked.append(rec)
        out += picked
    return sorted(out, key=lambda r: r["id"])


def _label_words(labels: list[int]) -> str:
    cats = [name for name, on in zip(CATEGORIES, labels) if on]
    return "unsafe: " + ", ".join(cats) if cats else "safe"


def _md_cell(text: str) -> str:
    return textnorm.normalize_text(text).replace("|", "\\|")


def sample_markdown(iteration: int, params: Params, kept: list[dict[str, Any]],
                    dropped: list[tuple[dict[str, Any], str]]) -> str:
    """fidelity_sample.md: per language, SAMPLE_ROWS kept rows, rows dropped by the fidelity filters and
    rows dropped by the others, each beside its seed, chosen by sha1(id)."""
    cur = params.curation
    lines = [
        f"# Curation sample, iteration {iteration}",
        "",
        f"Seed and generated sample side by side. `sim` = USE-m cosine similarity (kept if >= {cur.min_similarity});",
        f"`p(unsafe)` = the frozen seed-only probe's probability that the sample is unsafe (dropped when the",
        f"label's opposite gets >= {cur.max_label_contradiction}). Rows are a deterministic sample (sha1 of the id).",
    ]
    groups = {
        "kept": [(r, "kept") for r in kept],
        "dropped by a fidelity filter": [(r, why) for r, why in dropped if why in FIDELITY_FILTERS],
        "dropped by another filter": [(r, why) for r, why in dropped if why not in FIDELITY_FILTERS],
    }
    for lang in sorted({r["lang"] for r in kept} | {r["lang"] for r, _ in dropped}):
        lines += ["", f"## {lang}"]
        for title, rows in groups.items():
            picked = sorted((x for x in rows if x[0]["lang"] == lang), key=lambda x: _rank(x[0]["id"]))[:SAMPLE_ROWS]
            lines += ["", f"### {title} ({sum(x[0]['lang'] == lang for x in rows)})", ""]
            if not picked:
                lines.append("(none)")
                continue
            lines += ["| label | seed | sample | sim | p(unsafe) | verdict |", "|---|---|---|---:|---:|---|"]
            for rec, why in picked:
                lines.append(
                    f"| {_label_words(rec['labels'])} | {_md_cell(rec['seed_text'])} | {_md_cell(rec['text'])} | "
                    f"{rec['similarity']:.2f} | {rec['probe_unsafe']:.2f} | {why} |"
                )
    return "\n".join(lines) + "\n"


def curate(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Stage `curate`: filter layout.generated(i) into layout.curated(i); returns the count report."""
    from duelguard.probe import META_FILE, WEIGHTS_FILE

    if iteration < 1:
        raise ValueError(f"curate runs in loop iterations >= 1, got iteration {iteration}")
    earlier = [layout.curated(j) for j in range(1, iteration)]
    missing = [p for p in earlier if not p.exists()]
    if missing:
        raise DataError(f"{missing[0]}: earlier iteration not curated; curate iterations in order (dedup needs it)")
    seed_files = [layout.seed_split(s) for s in SPLITS]
    judge_files = [layout.probe_dir(0) / META_FILE, layout.probe_dir(0) / WEIGHTS_FILE]
    frozen_game_set = [layout.game_set(1)] if iteration > 1 else []
    inputs = [layout.generated(iteration), *seed_files, *earlier, *judge_files, *frozen_game_set]
    for path in inputs:
        if not path.exists():
            raise DataError(f"{path}: file not found (run the stage that writes it first)")

    samples = read_records(layout.generated(iteration))
    for n, rec in enumerate(samples, 1):
        if not isinstance(rec.get("seed_text"), str):
            raise DataError(f"{layout.generated(iteration)}:{n}: synthetic record needs a 'seed_text' string")
    seed = {s: read_records(layout.seed_split(s)) for s in SPLITS}
    ref = build_reference(
        params,
        seed_texts=(r["text"] for s in SPLITS for r in seed[s]),
        earlier_texts=(r["text"] for path in earlier for r in read_records(path)),
        eval_texts=(r["text"] for s in ("dev", "test") for r in seed[s]),
    )
    fidelity = fidelity_scores(samples, load_judge(layout), layout.weights_cache)
    kept, dropped = apply_filters(params, samples, ref, fidelity)
    if iteration == 1:
        game_set = select_game_set(kept, params.curation.game_set_per_language)
        write_records(layout.game_set(1), game_set)
    else:
        game_set = read_records(layout.game_set(1))
        write_records(layout.game_set(iteration), game_set)
    held_out = {r["id"] for r in game_set}
    curated = [r for r in kept if r["id"] not in held_out]
    write_jsonl(layout.rejected(iteration), [{**rec, "dropped_by": reason} for rec, reason in dropped])
    write_records(layout.curated(iteration), curated)
    atomic_write_text(layout.fidelity_sample(iteration), sample_markdown(iteration, params, kept, dropped))
    per_lang_game: dict[str, int] = defaultdict(int)
    for rec in game_set:
        per_lang_game[rec["lang"]] += 1
    report = {
        "iteration": iteration,
        **count_report(samples, kept, dropped),
        "curated": len(curated),
        "game_set": {"n": len(game_set), "held_out_here": len(held_out & {r["id"] for r in kept}),
                     "per_language": dict(sorted(per_lang_game.items()))},
        "fidelity": fidelity_distribution(kept, dropped),
    }
    atomic_write_json(layout.curation_report(iteration), report)
    return report
