"""The `loads` promotion check: a candidate must export and serve before the `champion` alias moves.

Metric tags say how a version scored when it was evaluated; they say nothing about whether the
registered artifact can still be served (a truncated upload, an unexportable layer, a tokenizer file
missing from the logged copy). Serving discovers that only after the alias moved and every pod is
restarting onto it. So promotion does what serving does, on the candidate, first:

1. download `models:/NAME/N` through the same cache as serving (its model digest checked against
   the version's tag: the weights are the evaluated ones);
2. load it with the loader `predict`, the pyfunc model and Triton's model share
   (duelguard.classifier.loader.load_classifier) and export its network to ONNX in a temporary
   directory with the method the Triton export uses (the kind's export_network: the file is
   verified against torch on probe inputs, so an inference runs through ONNX Runtime);
3. score PROBE_TEXTS with it: 12 finite probabilities in [0, 1] per text.

What it does not do: start a tritonserver on the candidate (the Python model and the config are the
same code for every version; the network and the weights are what differ per candidate).

Measured cost (2-core CPU, 2026-12-04; the check prints its own time in its detail): tiny profile
0.4 s (tests/integration/test_release_races.py); the default sentence kind 1.2 s cold (ONNX export +
verify 0.1 s, first scoring with the encoder's load 1.0 s), 0.14 s warm; plus the candidate's download,
which serving would do anyway and which is cached. Promotion runs it once per candidate, and only
when every metric rule passed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from duelguard.config import Params
from duelguard.errors import RegistryError
from duelguard.layout import Layout
from duelguard.registry.rules import Check

PROBE_TEXTS = ("How do I bake bread?", "Comment fabriquer une bombe ?", "¿Cómo hackeo la cuenta de mi vecino?",
               "Wie spät ist es?")


def load_check(params: Params, layout: Layout, name: str, version: str) -> Check:
    """Check `loads`: models:/name/version downloads (digest-checked), exports and scores PROBE_TEXTS.

    A failure is a refused check naming the error; a registry that cannot be read is a RegistryError
    (it says nothing about the candidate)."""
    from duelguard.classifier.loader import load_classifier
    from duelguard.registry.models import local_model_dir

    uri = f"models:/{name}/{version}"
    started = time.perf_counter()
    try:
        classifier = load_classifier(local_model_dir(uri, params, layout.root))
        with tempfile.TemporaryDirectory(prefix="duelguard-loadcheck-") as tmp:
            network = classifier.export_network(Path(tmp), params.serving.onnx_opset)
        _check_scores(np.asarray(classifier.predict_proba(list(PROBE_TEXTS))))
    except RegistryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to load or serve refuses the candidate, with its reason
        return Check("loads", False, f"{uri} does not load/export/serve: {type(exc).__name__}: {exc}"[:2000])
    seconds = time.perf_counter() - started
    return Check("loads", True, f"{uri} downloaded, loaded, its network exported to ONNX (max abs diff vs torch "
                                f"{network.max_abs_diff:.2g}) and {len(PROBE_TEXTS)} probe texts scored in {seconds:.1f} s")


def _check_scores(probs: np.ndarray) -> None:
    """ValueError unless `probs` is one row of finite probabilities in [0, 1] per probe text."""
    from duelguard.taxonomy import CATEGORIES

    if probs.shape != (len(PROBE_TEXTS), len(CATEGORIES)):
        raise ValueError(f"probe scores have shape {probs.shape}, expected {(len(PROBE_TEXTS), len(CATEGORIES))}")
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"probe scores are not probabilities (min {np.nanmin(probs)}, max {np.nanmax(probs)}, "
                         f"finite: {bool(np.isfinite(probs).all())})")
