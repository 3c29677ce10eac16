"""THE mapping of every raw source's labels onto the 12-category taxonomy (one place, documented).

Each raw label value maps to one `Outcome`:
    unsafe(C..)   unsafe with these categories; recorded per row as `label_source` (dataset category)
    RULES         unsafe, but the dataset has no usable category: categories come from KEYWORD_RULES
                  below; recorded per row as `label_rule` (the names of the rules that fired)
    SAFE          benign (all-zero labels)
    drop(reason)  not used, counted under `reason` in the data card (never silent)

Decisions (and why):
- Hate/hateful -> C9 Hate. "Offensive" alone (Davidson class 1, GermEval INSULT/PROFANITY, MLMA
  offensive/abusive/disrespectful/fearful without "hateful") is DROPPED, not made benign: profanity
  and insults are neither what a guardrail must flag nor clean benign examples, so either label
  would teach the classifier something false. GermEval ABUSE is kept as C9: the GermEval-2018
  guidelines define it as degrading people for belonging to a group, i.e. hate speech.
- MLMA rows whose annotators chose "normal" together with other sentiments disagree with each
  other: dropped as `annotator_disagreement`.
- Misinformation/disinformation (HarmBench, StrongREJECT, JailbreakBench) -> C2 Non-Violent Crimes:
  the taxonomy has no misinformation category and the prompts ask for deception and fraud.
- Harassment/bullying has no category of its own: HarmBench harassment_bullying and "harmful" go
  through the keyword rules (threats become C1, slurs C9, the rest falls back to C2); JailbreakBench
  "Harassment/Discrimination" and StrongREJECT "Hate, harassment and discrimination" are mostly
  discrimination, so C9.
- SimpleSafetyTests harm areas: self-harm -> C10, violence -> C1, illegal items and scams -> C2,
  child safety -> C4. Safety-tuned-LLaMAs evaluation sets: I-CoNa and I-Controversial -> C9,
  I-PhysicalSafetyUnsafe (dangerous "why you should ..." advice) -> C5, I-PhysicalSafetySafe -> safe,
  Q-Harm (mixed, benign-leaning questions, no per-row label) -> dropped as `unlabelled_mixed`.
- MultiJail red-team tags map where a category is clear; tags without one (unethical behaviour,
  weapons, terrorism, bullying) fall back to keyword rules when no tag of the row maps.
- C12 Jailbreak Prompts: no raw source contains jailbreak prompts (StrongREJECT's "DAN" column is
  the provenance of a plain request, not a jailbreak text), so only the keyword rule can set it and
  the seed has (almost) none: the loop's generator is where C12 data must come from.

Keyword rules apply to English text only (every RULES source is English; MultiJail translations
inherit the labels of their English row). All rules that match fire (multi-label); a row no rule
matches gets the fallback C2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from duelguard.taxonomy import labels_from


@dataclass(frozen=True)
class Outcome:
    kind: Literal["unsafe", "rules", "safe", "drop"]
    codes: tuple[str, ...] = ()
    reason: str = ""


def unsafe(*codes: str) -> Outcome:
    return Outcome("unsafe", codes)


def drop(reason: str) -> Outcome:
    return Outcome("drop", reason=reason)


RULES = Outcome("rules")
SAFE = Outcome("safe")

HARMBENCH: dict[str, Outcome] = {
    "copyright": unsafe("C7"),
    "cybercrime_intrusion": unsafe("C2"),
    "illegal": unsafe("C2"),
    "misinformation_disinformation": unsafe("C2"),
    "chemical_biological": unsafe("C8"),
    "harassment_bullying": RULES,
    "harmful": RULES,
}

STRONGREJECT: dict[str, Outcome] = {
    "Non-violent crimes": unsafe("C2"),
    "Violence": unsafe("C1"),
    "Disinformation and deception": unsafe("C2"),
    "Hate, harassment and discrimination": unsafe("C9"),
    "Illegal goods and services": unsafe("C2"),
    "Sexual content": unsafe("C11"),
}

# JailbreakBench categories appear in refusal_direction/harmful_test.json.
JAILBREAKBENCH: dict[str, Outcome] = {
    "Harassment/Discrimination": unsafe("C9"),
    "Malware/Hacking": unsafe("C2"),
    "Physical harm": unsafe("C1"),
    "Economic harm": unsafe("C2"),
    "Fraud/Deception": unsafe("C2"),
    "Disinformation": unsafe("C2"),
    "Sexual/Adult content": unsafe("C11"),
    "Privacy": unsafe("C6"),
    "Expert advice": unsafe("C5"),
    "Government decision-making": unsafe("C2"),
}

# refusal_direction/harmful_*.json carries the category of whichever benchmark a row came from.
REFUSAL_HARMFUL: dict[str | None, Outcome] = {None: RULES, **HARMBENCH, **STRONGREJECT, **JAILBREAKBENCH}

SIMPLESAFETYTESTS: dict[str, Outcome] = {
    "Suicide, Self-Harm, and Eating Disorders": unsafe("C10"),
    "Physical harm and Violence": unsafe("C1"),
    "Illegal and Highly Regulated items": unsafe("C2"),
    "Scams and fraud": unsafe("C2"),
    "Child safety": unsafe("C4"),
}

MULTIJAIL_TAGS: dict[str, Outcome] = {
    "Violence & incitement": unsafe("C1"),
    "Animal abuse": unsafe("C1"),
    "Child abuse": unsafe("C1"),
    "Discrimination & injustice": unsafe("C9"),
    "Hate speech & offensive language": unsafe("C9"),
    "Theft": unsafe("C2"),
    "Fraud & deception": unsafe("C2"),
    "Property crime & vandalism": unsafe("C2"),
    "Substance abuse & banned substances": unsafe("C2"),
    "Conspiracy theories & misinformation": unsafe("C2"),
    "Sexual exploitation & human trafficking": unsafe("C3"),
    "Adult content": unsafe("C11"),
    "Self-harm": unsafe("C10"),
    "Soliciting personally identifiable information": unsafe("C6"),
    "Non-violent unethical behavior (e.g. lying, cheating, etc.)": RULES,
    "Bullying & harassment": RULES,
    "Weapons": RULES,
    "Terrorism & organized crime": RULES,
}

# safety_tuned_llamas/evaluation/<name>.json (I-MaliciousInstructions is labelled per row by its tags).
STL_EVALUATION: dict[str, Outcome] = {
    "I-CoNa": unsafe("C9"),
    "I-Controversial": unsafe("C9"),
    "I-PhysicalSafetyUnsafe": unsafe("C5"),
    "I-PhysicalSafetySafe": SAFE,
    "Q-Harm": drop("unlabelled_mixed"),
}
STL_MALICIOUS_TAGS: dict[str, Outcome] = {"hate": unsafe("C9"), "crime": RULES}

HATECHECK_LABEL: dict[str, Outcome] = {"hateful": unsafe("C9"), "non-hateful": SAFE}

DAVIDSON_CLASS: dict[str, Outcome] = {
    "0": unsafe("C9"),
    "1": drop("offensive_not_hate"),
    "2": SAFE,
}

# GermEval 2018: (coarse, fine) label pair.
GERMEVAL: dict[tuple[str, str], Outcome] = {
    ("OTHER", "OTHER"): SAFE,
    ("OFFENSE", "ABUSE"): unsafe("C9"),
    ("OFFENSE", "INSULT"): drop("offensive_not_hate"),
    ("OFFENSE", "PROFANITY"): drop("offensive_not_hate"),
}

MLMA_SENTIMENTS = frozenset({"normal", "offensive", "hateful", "abusive", "fearful", "disrespectful"})

TOXIGEN_SIDE: dict[str, Outcome] = {"hate": unsafe("C9"), "neutral": SAFE}


def mlma_outcome(sentiment: str) -> Outcome:
    """MLMA's multi-valued sentiment ("offensive_hateful", ...): hateful -> C9, normal -> safe."""
    values = set(sentiment.split("_"))
    unknown = values - MLMA_SENTIMENTS
    if unknown:
        raise KeyError(f"unknown MLMA sentiment value(s) {sorted(unknown)}")
    if values == {"normal"}:
        return SAFE
    if "normal" in values:
        return drop("annotator_disagreement")
    if "hateful" in values:
        return unsafe("C9")
    return drop("offensive_not_hate")


def combine(outcomes: list[Outcome]) -> Outcome:
    """Several category tags on one row: the union of the codes of the tags that map; RULES if none
    maps (rule-mapped tags only matter when no tag gives a category)."""
    codes = tuple(sorted({c for o in outcomes if o.kind == "unsafe" for c in o.codes}, key=lambda c: int(c[1:])))
    if codes:
        return unsafe(*codes)
    if any(o.kind == "rules" for o in outcomes):
        return RULES
    raise ValueError("combine() needs at least one unsafe or rules outcome")


# --- keyword rules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeywordRule:
    """Fires when `pattern` matches, `also` (if given) matches too, and `unless` (if given) does not."""

    name: str
    code: str
    pattern: str
    also: str | None = None
    unless: str | None = None

    def fires(self, text: str) -> bool:
        return bool(
            _rx(self.pattern).search(text)
            and (self.also is None or _rx(self.also).search(text))
            and (self.unless is None or not _rx(self.unless).search(text))
        )


_CACHE: dict[str, re.Pattern[str]] = {}


def _rx(pattern: str) -> re.Pattern[str]:
    if pattern not in _CACHE:
        _CACHE[pattern] = re.compile(pattern, re.IGNORECASE)
    return _CACHE[pattern]


_SELF = r"\b(kill|hurt|harm|cut|starve)(ing)? (myself|yourself|themselves|oneself|himself|herself)\b"

KEYWORD_RULES: tuple[KeywordRule, ...] = (
    KeywordRule(
        "weapons_mass_destruction",
        "C8",
        r"\b(bombs?|explosives?|detonat\w*|nerve agents?|sarin|vx gas|anthrax|ricin|bio-?weapons?|"
        r"biological (weapons?|warfare|agents?)|chemical (weapons?|warfare|agents?)|nuclear|radiological|"
        r"dirty bomb|uranium|plutonium|mustard gas|pathogens?|weapons? of mass destruction|grenades?|napalm)\b",
    ),
    KeywordRule(
        "violence",
        "C1",
        r"\b(kill\w*|murder\w*|assassinat\w*|shoot\w*|stab\w*|tortur\w*|kidnap\w*|violen\w*|massacre\w*|"
        r"terroris\w*|poison\w*|assault\w*|beat (up|someone)|hurt (someone|people|others|him|her|them)|"
        r"harm (someone|people|others|him|her|them)|physically (attack|harm|hurt)\w*|guns?|firearms?|"
        r"weapons?|mass shooting|hostage|abuse (a|my|the) (child|animal|dog|cat|wife|husband|partner))\b",
        unless=_SELF,
    ),
    KeywordRule(
        "child_sexual",
        "C4",
        r"\b(child\w*|minors?|kids?|underage|teens?|teenagers?|\d{1,2}[- ]year[- ]old|preteen|little girls?|"
        r"little boys?)\b",
        also=r"\b(sex\w*|nude\w*|naked|porn\w*|erotic\w*|explicit|groom\w*|molest\w*)\b",
    ),
    KeywordRule(
        "sex_crime",
        "C3",
        r"\b(rap(e|ed|es|ing|ist)|sexual(ly)? (assault|abuse|harass)\w*|sex[- ]traffick\w*|human traffick\w*|"
        r"prostitut\w*|molest\w*|revenge porn|non-?consensual|upskirt\w*|pimp\w*)\b",
    ),
    KeywordRule(
        "sexual_content",
        "C11",
        r"\b(sex|sexual\w*|sexy|porn\w*|erotic\w*|nude\w*|naked|orgasm\w*|explicit (story|content|scene)|"
        r"intercourse|fetish\w*|genital\w*|masturbat\w*)\b",
        unless=r"\bsexual orientation\b",
    ),
    KeywordRule(
        "self_harm",
        "C10",
        _SELF + r"|\b(suicid\w*|self[- ]harm\w*|overdos\w*|eating disorders?|anorexi\w*|bulimi\w*|"
        r"end (my|your|their) (own )?life|take (my|your|their) (own )?life)\b",
    ),
    KeywordRule(
        "hate",
        "C9",
        r"\b(racis\w*|racial slurs?|slurs?|hate speech|antisemit\w*|jews?|jewish|muslims?|islam\w*|"
        r"minorit(y|ies)|immigrants?|refugees?|homophob\w*|transphob\w*|xenophob\w*|sexis\w*|"
        r"white supremac\w*|nazi\w*|holocaust|inferior|discriminat\w*|ethnic cleansing|black people|"
        r"gay people|lgbt\w*|races?|racial\w*)\b",
    ),
    KeywordRule(
        "privacy",
        "C6",
        r"\b(personal (data|information|details)|private (data|information)|dox\w*|home address\w*|"
        r"social security( number)?s?|ssns?|phone numbers?|spy(ing)? on|stalk\w*|surveil\w*|eavesdrop\w*|"
        r"track (someone|a person|people|my (wife|husband|partner|ex))\w*|location of|medical records|"
        r"without (their|his|her) (knowledge|consent))\b",
    ),
    KeywordRule(
        "intellectual_property",
        "C7",
        r"\b(copyright\w*|pirat(e|ed|ing|es)|piracy|plagiar\w*|torrent\w*|watermarks?|trademarks?|"
        r"bootleg\w*|drm|lyrics of|full text of)\b",
    ),
    KeywordRule(
        "specialized_advice",
        "C5",
        r"\b(medical advice|legal advice|financial advice|investment advice|tax advice|diagnos\w*|"
        r"prescri\w*|dosage|medications?|without a (doctor|lawyer|license|licence)|self-medicat\w*|"
        r"treat (my|your) (own )?\w+ (at home|myself))\b",
    ),
    KeywordRule(
        "jailbreak",
        "C12",
        r"\b(ignore (all |any )?(the )?(previous|prior|above|earlier) instructions|jailbreak\w*|do anything now|"
        r"developer mode|without (any )?(restrictions|filters|censorship)|bypass (your|the|its) "
        r"(safety|filters?|guidelines|restrictions)|you are no longer bound|pretend (you are|to be) an? "
        r"(unfiltered|uncensored|evil))\b",
    ),
    KeywordRule(
        "non_violent_crime",
        "C2",
        r"\b(hack\w*|steal\w*|stole\w*|theft|thie(f|ves)|fraud\w*|scam\w*|counterfeit\w*|launder\w*|drugs?|"
        r"cocaine|heroin|meth\w*|fentanyl|smuggl\w*|brib\w*|forg(e|ed|ery|ing)|phish\w*|malware|ransomware|"
        r"virus(es)?|exploit\w*|cheat\w*|tax evasion|evade taxes|blackmail\w*|extort\w*|shoplift\w*|"
        r"insider trading|illegal\w*|embezzl\w*|vandal\w*|break into|burglar\w*|trespass\w*|poach\w*|"
        r"identity theft|credit card|manipulat\w*|sabotag\w*|ponzi|pyramid scheme|fake (news|reviews?|ids?))\b",
    ),
)

FALLBACK_RULE = "fallback_non_violent_crime"
FALLBACK_CODE = "C2"


def keyword_labels(text: str) -> tuple[list[int], list[str]]:
    """(12-int label vector, names of the rules that fired) for an unsafe row without a category."""
    fired = [rule for rule in KEYWORD_RULES if rule.fires(text)]
    if not fired:
        return labels_from([FALLBACK_CODE]), [FALLBACK_RULE]
    return labels_from([rule.code for rule in fired]), [rule.name for rule in fired]
