"""Multi-label losses over the 12 category logits.

ZLPR ("zero-bounded log-sum-exp & pairwise rank-based", the multilabel categorical cross-entropy
that DuoGuard trains with) is, for one example with logits s and label set P (negatives N):

    L = log(1 + sum_{j in N} exp(s_j)) + log(1 + sum_{i in P} exp(-s_i))

It pushes every positive logit above 0 and every negative below 0 without the per-class
independence of BCE, so a rare category is not drowned by the 11 negatives of each example.
Each term is computed as logsumexp over the masked logits with a 0 appended (the "1 +"), which is
exact and stable for any logit magnitude; an example with no positives (safe) has the second term
log(1) = 0. BCE-with-logits is kept as an option (`classifier.loss: bce`).

Both return one loss per example (no batch reduction): training weights examples (language
balance) before averaging, and the game scores each synthetic sample by its own loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def zlpr_loss(logits: Any, labels: Any) -> Any:
    """ZLPR loss per example, shape (B,). logits: float (B, C); labels: {0,1} (B, C)."""
    import torch

    s = logits.float()
    positive = labels.to(torch.bool)
    neg_inf = torch.finfo(s.dtype).min
    zeros = s.new_zeros(s.shape[0], 1)
    neg_term = torch.logsumexp(torch.cat([s.masked_fill(positive, neg_inf), zeros], dim=1), dim=1)
    pos_term = torch.logsumexp(torch.cat([(-s).masked_fill(~positive, neg_inf), zeros], dim=1), dim=1)
    return neg_term + pos_term


def bce_loss(logits: Any, labels: Any) -> Any:
    """Binary cross-entropy with logits per example (mean over categories), shape (B,)."""
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none").mean(dim=1)


LOSSES: dict[str, Callable[[Any, Any], Any]] = {"zlpr": zlpr_loss, "bce": bce_loss}


def loss_function(name: str) -> Callable[[Any, Any], Any]:
    """The loss named in params (`classifier.loss`)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    return LOSSES[name]
