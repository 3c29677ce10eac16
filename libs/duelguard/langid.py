"""Offline language identification (py3langid ships its model inside the wheel: no download).

The identifier is restricted to a candidate set: the project's languages plus close neighbours
(Italian, Portuguese, Catalan, Dutch, ...). Restricting removes absurd answers on short texts
(langid's full 97-language model calls many short French lines Walloon or Breton), while keeping
the neighbours lets a garbled Spanish-looking output be recognised as NOT Spanish.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

# Languages that a generator asked for fr/es/de/en tends to drift into; always candidates.
NEIGHBOUR_LANGUAGES: tuple[str, ...] = ("en", "fr", "es", "de", "it", "pt", "ca", "nl", "ro", "la")


def candidate_languages(*languages: Iterable[str]) -> tuple[str, ...]:
    """The sorted union of the given language lists and the neighbour languages."""
    out = set(NEIGHBOUR_LANGUAGES)
    for group in languages:
        out.update(group)
    return tuple(sorted(out))


@lru_cache(maxsize=8)
def _identifier(candidates: tuple[str, ...]) -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_pickled_model(MODEL_FILE, norm_probs=True)
    known = set(ident.nb_classes)
    unknown = sorted(set(candidates) - known)
    if unknown:
        raise ValueError(f"py3langid does not know language code(s) {unknown}")
    ident.set_languages(list(candidates))
    return ident


# Texts up to this many characters have their answer memoised (IDENTIFY_CACHE_SIZE of them, least
# recently used out first: at most ~16 MB): long text is scored unit by unit, and its units repeat,
# across the texts of one call (every sentence of a shared boilerplate) and across the models that
# score the same texts (calibration's recall floor scores its texts with two classifiers).
IDENTIFY_CACHE_CHARS = 1000
IDENTIFY_CACHE_SIZE = 16384


def identify(text: str, candidates: tuple[str, ...]) -> tuple[str, float]:
    """(language code, probability normalised over the candidates) of `text`."""
    key = tuple(sorted(candidates))
    return _identify_cached(text, key) if len(text) <= IDENTIFY_CACHE_CHARS else _identify(text, key)


def _identify(text: str, candidates: tuple[str, ...]) -> tuple[str, float]:
    lang, prob = _identifier(candidates).classify(text)
    return str(lang), float(prob)


_identify_cached = lru_cache(maxsize=IDENTIFY_CACHE_SIZE)(_identify)
