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

Survivors keep the seed's labels and the generator's provenance, plus `langid_confidence`. Writes
layout.curated(i), layout.curation_report(i) (counts overall and per language) and layout.rejected(i)
(each dropped sample with the filter that dropped it, for auditing the filters).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from duelguard import langid, textnorm
from duelguard.config import Params
from duelguard.fsio import DataError, atomic_write_json, write_jsonl
from duelguard.layout import Layout
from duelguard.records import SPLITS, read_records, write_records

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
)

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


def echo_similarity(text: str, seed_text: str) -> float:
    """Edit similarity (difflib ratio, 0..1) of the two texts' dedup keys."""
    return difflib.SequenceMatcher(None, textnorm.dedup_key(text), textnorm.dedup_key(seed_text), autojunk=False).ratio()


def length_ratio(text: str, seed_text: str) -> float:
    """Characters of the sample per character of its seed (normalised whitespace)."""
    return len(textnorm.normalize_text(text)) / max(1, len(textnorm.normalize_text(seed_text)))


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


def first_failing_filter(params: Params, rec: dict[str, Any], ref: Reference, lang_found: str, conf: float) -> str | None:
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
    return None


def apply_filters(
    params: Params, samples: list[dict[str, Any]], ref: Reference
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """Run the filters on every sample; return (kept samples, [(dropped sample, filter name)]).

    Duplicates within the batch: a sample is compared with the samples kept before it, so the
    first of a group of duplicates survives. `ref` is extended with every kept sample.
    """
    from tqdm import tqdm

    candidates = langid.candidate_languages(params.seed.languages, params.generator.languages)
    kept: list[dict[str, Any]] = []
    dropped: list[tuple[dict[str, Any], str]] = []
    assert ref.near is not None
    for n, rec in enumerate(tqdm(samples, desc="curate", unit="sample", disable=len(samples) < 500)):
        lang_found, conf = langid.identify(rec["text"], candidates)
        reason = first_failing_filter(params, rec, ref, lang_found, conf)
        if reason is not None:
            dropped.append((rec, reason))
            continue
        ref.exact.add(textnorm.dedup_key(rec["text"]))
        ref.near.add(f"kept-{n}", rec["text"])
        kept.append({**rec, "langid_confidence": round(conf, 4)})
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


def curate(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Stage `curate`: filter layout.generated(i) into layout.curated(i); returns the count report."""
    if iteration < 1:
        raise ValueError(f"curate runs in loop iterations >= 1, got iteration {iteration}")
    earlier = [layout.curated(j) for j in range(1, iteration)]
    missing = [p for p in earlier if not p.exists()]
    if missing:
        raise DataError(f"{missing[0]}: earlier iteration not curated; curate iterations in order (dedup needs it)")
    seed_files = [layout.seed_split(s) for s in SPLITS]
    inputs = [layout.generated(iteration), *seed_files, *earlier]
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
    kept, dropped = apply_filters(params, samples, ref)
    write_jsonl(layout.rejected(iteration), [{**rec, "dropped_by": reason} for rec, reason in dropped])
    write_records(layout.curated(iteration), kept)
    report = {"iteration": iteration, **count_report(samples, kept, dropped)}
    atomic_write_json(layout.curation_report(iteration), report)
    return report
