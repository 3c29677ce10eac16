"""Offline language identification: restricted candidates, and memoised answers for short text."""

from __future__ import annotations

import duelguard.langid as langid
from duelguard.langid import NEIGHBOUR_LANGUAGES, identify


def test_identify_memoises_short_text_only_and_answers_as_the_model_does() -> None:
    texts = ["Das Wetter bleibt morgen freundlich und warm.", "Il fera beau demain sur toute la région.",
             "¿Dónde está la estación de tren más cercana?", "The meeting moved to Thursday afternoon."]
    long_text = " ".join(texts[1:2] * 40)  # past IDENTIFY_CACHE_CHARS
    assert len(long_text) > langid.IDENTIFY_CACHE_CHARS >= max(map(len, texts))
    key = tuple(sorted(NEIGHBOUR_LANGUAGES))
    langid._identify_cached.cache_clear()
    first = [identify(t, NEIGHBOUR_LANGUAGES) for t in texts]
    assert [lang for lang, _ in first] == ["de", "fr", "es", "en"]
    assert first == [langid._identify(t, key) for t in texts]  # the model's own answer, unmemoised
    reversed_candidates = tuple(reversed(NEIGHBOUR_LANGUAGES))
    assert [identify(t, reversed_candidates) for t in texts] == first  # candidates in any order: one entry
    info = langid._identify_cached.cache_info()
    assert (info.hits, info.misses, info.currsize) == (4, 4, 4)
    assert identify(long_text, NEIGHBOUR_LANGUAGES)[0] == "fr"
    assert langid._identify_cached.cache_info().currsize == 4  # a long text is identified, never kept
