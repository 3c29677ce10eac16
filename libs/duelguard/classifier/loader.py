"""The one loader of a saved classifier directory, whichever kind it holds.

`duelguard predict`, evaluation, the registry's pyfunc model and load check, the Triton export and
training from the previous iteration all open a classifier here: its duelguard.json is read and
checked (duelguard.classifier.saved.read_metadata), its kind decided (saved.kind_of), and that kind
opens its own files: a token model (duelguard.classifier.model.GuardClassifier) or a sentence
classifier (duelguard.classifier.sentence.SentenceGuard). Both have the same interface.
"""

from __future__ import annotations

from pathlib import Path

from duelguard.classifier.model import GuardClassifier
from duelguard.classifier.saved import SENTENCE, TOKEN, SavedClassifier, kind_of, read_metadata
from duelguard.classifier.sentence import SentenceGuard

KINDS: dict[str, type[SavedClassifier]] = {TOKEN: GuardClassifier, SENTENCE: SentenceGuard}


def load_classifier(path: str | Path, embed_cache: Path | None = None) -> SavedClassifier:
    """The classifier saved in directory `path` (ModelNotFoundError when it holds none, DataError when
    its duelguard.json does not fit this code). `embed_cache`: where a kind that embeds memoises its
    embeddings (stages score the same texts again and again; duelguard.encoder.embed_cached)."""
    path = Path(path)
    meta = read_metadata(path)
    classifier = KINDS[kind_of(meta)].from_saved(path, meta)
    classifier.embed_cache = embed_cache
    return classifier
