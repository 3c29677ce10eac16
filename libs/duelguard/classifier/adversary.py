"""A language adversary for training: make the pooled representation useless for telling languages apart.

The seed's French, Spanish and German rows are hate speech only, so a classifier fine-tuned on it
learns a shortcut: "not English and not hate -> safe". Measured on the behavioural suite, the
seed-only e5 classifier caught 76% of English unsafe requests but about 35% of the same requests
written in French, Spanish or German. Domain-adversarial training (Ganin & Lempitsky, 2015; for
zero-resource cross-lingual classification, Keung et al., 2019) removes the shortcut at its source:
a small head predicts each example's language from the pooled vector, and a gradient-reversal layer
between them makes the encoder's update *increase* that head's loss, so whatever the classifier
keeps must be shared across languages. The head exists only during training; nothing is exported.

`classifier.language_adversary` is the reversal strength (0 disables it). Encoder networks only
(pooling mean/cls): they expose the pooled vector the adversary reads.
"""

from __future__ import annotations

from typing import Any


def gradient_reversal(x: Any, strength: float) -> Any:
    """Identity forward; backward multiplies the gradient by -strength."""
    import torch

    class _Reverse(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, value: Any) -> Any:
            return value.view_as(value)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            return -strength * grad

    return _Reverse.apply(x)


def language_head(hidden_size: int, languages: list[str]) -> Any:
    """The adversary: a linear probe from the pooled vector to the training languages."""
    import torch

    return torch.nn.Linear(hidden_size, len(languages))


def adversary_loss(head: Any, pooled: Any, language_index: Any, strength: float) -> Any:
    """Cross-entropy of the language head on gradient-reversed features (mean over the batch)."""
    import torch.nn.functional as F

    return F.cross_entropy(head(gradient_reversal(pooled, strength)), language_index)
