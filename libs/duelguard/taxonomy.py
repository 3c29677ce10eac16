"""The 12-category harm taxonomy (DuoGuard / MLCommons-style) and the languages we target.

Everything that stores or emits labels uses this order: a label vector is 12 ints, a score vector
is 12 floats, index i is CATEGORIES[i]. Safe = all zeros.
"""

from __future__ import annotations

from typing import Final

CATEGORY_CODES: Final[tuple[str, ...]] = tuple(f"C{i}" for i in range(1, 13))
CATEGORIES: Final[tuple[str, ...]] = (
    "violent_crimes",
    "non_violent_crimes",
    "sex_related_crimes",
    "child_sexual_exploitation",
    "specialized_advice",
    "privacy",
    "intellectual_property",
    "indiscriminate_weapons",
    "hate",
    "suicide_self_harm",
    "sexual_content",
    "jailbreak_prompts",
)
CATEGORY_TITLES: Final[tuple[str, ...]] = (
    "Violent Crimes",
    "Non-Violent Crimes",
    "Sex-Related Crimes",
    "Child Sexual Exploitation",
    "Specialized Advice",
    "Privacy",
    "Intellectual Property",
    "Indiscriminate Weapons",
    "Hate",
    "Suicide & Self-Harm",
    "Sexual Content",
    "Jailbreak Prompts",
)
NUM_CATEGORIES: Final[int] = len(CATEGORIES)

# The four languages the product is judged on (ISO 639-1). Seed data may carry others (MultiJail).
TARGET_LANGUAGES: Final[tuple[str, ...]] = ("en", "fr", "es", "de")
LANGUAGE_NAMES: Final[dict[str, str]] = {
    "en": "English",
    "fr": "French",
    "es": "Spanish",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "zh": "Chinese",
    "vi": "Vietnamese",
    "ar": "Arabic",
    "ko": "Korean",
    "th": "Thai",
    "bn": "Bengali",
    "sw": "Swahili",
    "jv": "Javanese",
}


def category_index(name_or_code: str) -> int:
    """Index of a category given its snake_case name or its C1..C12 code."""
    if name_or_code in CATEGORIES:
        return CATEGORIES.index(name_or_code)
    if name_or_code in CATEGORY_CODES:
        return CATEGORY_CODES.index(name_or_code)
    raise KeyError(f"unknown category {name_or_code!r}; expected one of {CATEGORIES} or C1..C12")


def labels_from(categories: list[str] | tuple[str, ...]) -> list[int]:
    """A 12-int label vector with 1 at each named category (names or codes)."""
    vec = [0] * NUM_CATEGORIES
    for cat in categories:
        vec[category_index(cat)] = 1
    return vec


def is_unsafe(labels: list[int]) -> bool:
    """A record is unsafe when any category is on."""
    return any(labels)
