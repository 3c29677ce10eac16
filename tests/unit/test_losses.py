"""ZLPR and BCE losses against their textbook formulas."""

from __future__ import annotations

import math

import pytest
import torch

from duelguard.classifier.losses import bce_loss, loss_function, zlpr_loss


def zlpr_direct(logits: list[list[float]], labels: list[list[int]]) -> float:
    """log(1 + sum_neg e^s) + log(1 + sum_pos e^-s), averaged over rows, computed naively."""
    total = 0.0
    for s, y in zip(logits, labels):
        neg = sum(math.exp(v) for v, t in zip(s, y) if t == 0)
        pos = sum(math.exp(-v) for v, t in zip(s, y) if t == 1)
        total += math.log(1 + neg) + math.log(1 + pos)
    return total / len(logits)


LOGITS = [[2.0, -1.0, 0.5, -3.0], [-0.2, 1.5, -2.5, 0.0], [0.3, 0.3, 0.3, 0.3]]
LABELS = [[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]]


def test_zlpr_matches_direct_formula() -> None:
    got = zlpr_loss(torch.tensor(LOGITS), torch.tensor(LABELS)).mean().item()
    assert got == pytest.approx(zlpr_direct(LOGITS, LABELS), rel=1e-6)


def test_zlpr_all_negative_row_has_no_positive_term() -> None:
    logits = torch.tensor([[-1.0, 0.5, 2.0]])
    got = zlpr_loss(logits, torch.zeros_like(logits)).item()
    assert got == pytest.approx(math.log(1 + math.exp(-1.0) + math.exp(0.5) + math.exp(2.0)), rel=1e-6)


def test_zlpr_is_stable_for_huge_logits_and_gives_finite_gradients() -> None:
    logits = torch.tensor([[1e4, -1e4, 500.0], [-800.0, 800.0, 0.0]], requires_grad=True)
    labels = torch.tensor([[0, 1, 1], [1, 1, 0]])
    loss = zlpr_loss(logits, labels).mean()
    loss.backward()
    # row 1: log(1+e^1e4) ~ 1e4 and log(1 + e^1e4 + e^-500) ~ 1e4; row 2: ~800 + log 2
    assert torch.isfinite(loss) and loss.item() == pytest.approx((2e4 + 800 + math.log(2)) / 2, rel=1e-4)
    assert torch.isfinite(logits.grad).all()


def test_zlpr_is_small_when_signs_are_right() -> None:
    good = zlpr_loss(torch.tensor([[8.0, -8.0, -8.0]]), torch.tensor([[1, 0, 0]])).item()
    bad = zlpr_loss(torch.tensor([[-8.0, 8.0, -8.0]]), torch.tensor([[1, 0, 0]])).item()
    assert good < 0.01 < 10 < bad


def test_bce_matches_formula() -> None:
    s, y = torch.tensor(LOGITS), torch.tensor(LABELS, dtype=torch.float32)
    p = torch.sigmoid(s)
    direct = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    assert bce_loss(s, y).mean().item() == pytest.approx(direct.item(), rel=1e-5)


def test_loss_function_by_name() -> None:
    assert loss_function("zlpr") is zlpr_loss and loss_function("bce") is bce_loss
    with pytest.raises(ValueError, match="unknown loss"):
        loss_function("focal")
