"""The classifier's move in the game (stage `train_classifier`).

Its own module so that neither side imports the other: the classifier package never imports the
loop, and the stop rule stays a leaf that generate can import cheaply.
"""

from __future__ import annotations

from typing import Any

from duelguard.classifier.train import train_classifier
from duelguard.config import Params
from duelguard.layout import Layout
from duelguard.loop.stoprule import carry_over_classifier


def classifier_turn(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Stage `train_classifier`, the classifier's move: carried over once the game has stopped, else
    trained (duelguard.classifier.train.train_classifier). The decision lives here so that the
    classifier package never imports the loop."""
    if (carried := carry_over_classifier(layout, iteration)) is not None:
        return carried
    return train_classifier(params, layout, iteration)
