"""The MLflow pyfunc flavour of a saved classifier directory.

This module imports mlflow at the top because the wrapper must subclass mlflow's PythonModel; it is
only run when a logged model is loaded through `mlflow.pyfunc.load_model` (duelguard.registry.models
logs it by its path, without importing it), never by the CLI's start-up path.

Its input and output columns are duelguard.registry.models.signature (given when the model is
logged). `predict` takes a DataFrame with a `text` column (or a list of strings / of input objects with
`text` or `messages`) and returns one row per input: the 12 category probabilities (taxonomy
order), `unsafe_score`, `unsafe`, `truncated` and `reason` ("too_long" or null), computed by the classifier's predict_records, i.e. exactly what
`duelguard predict` writes (same chunking, same thresholds).

The model is logged "from code" (MLflow 3's recommended way): this file itself is stored with the
model and run at load time, where `set_model` below names the model object, so nothing is pickled.
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc

from duelguard.registry.models import CLASSIFIER_ARTIFACT, OUTPUT_COLUMNS
from duelguard.taxonomy import CATEGORIES


def _input_objects(model_input: Any) -> list[dict[str, Any]]:
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        return model_input.to_dict(orient="records")
    if isinstance(model_input, str):
        return [{"text": model_input}]
    if isinstance(model_input, dict):
        return [model_input]
    return [x if isinstance(x, dict) else {"text": x} for x in model_input]


class GuardClassifierModel(mlflow.pyfunc.PythonModel):
    """Loads the saved classifier (either kind) from the model's `classifier` artifact directory."""

    def load_context(self, context: Any) -> None:
        from duelguard.classifier.loader import load_classifier

        self.classifier = load_classifier(context.artifacts[CLASSIFIER_ARTIFACT])

    # No type hints on predict's arguments: mlflow would try to derive a signature from them and warn;
    # the explicit signature() given at logging time is the contract.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import pandas as pd

        rows = []
        for out in self.classifier.predict_records(_input_objects(model_input)):
            row = {c: float(out["categories"][c]) for c in CATEGORIES}
            row["unsafe_score"] = float(out["unsafe_score"])
            row["unsafe"] = bool(out["unsafe"])
            row["truncated"] = bool(out["truncated"])
            row["reason"] = out["reason"]
            rows.append(row)
        return pd.DataFrame(rows, columns=[*CATEGORIES, *OUTPUT_COLUMNS])


mlflow.models.set_model(GuardClassifierModel())
