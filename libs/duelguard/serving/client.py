"""gRPC client of the served `duelguard` model: `duelguard classify` and the serving tests/benchmark.

Thresholds come from the served model itself: export writes the classifier's duelguard.json
thresholds (and taxonomy) into config.pbtxt `parameters`, and the client reads them with
GetModelConfig. So the `unsafe` flag always matches the model version that produced the scores,
and a remote client needs no access to the repository's files. The config names the one version it
belongs to (version_policy specific); every response names the version that answered, and
classify_records only pairs scores with the thresholds of that same version: after a version switch
it re-reads the config, and while a switch is in flight it asks again. Output objects are built by
duelguard.classifier.saved.output_record, the function `duelguard predict` uses, so both commands
emit the same schema.

Transient failures (server not up yet, restarting: gRPC UNAVAILABLE / DEADLINE_EXCEEDED) are retried
with exponential backoff; anything else (bad input, missing model) fails at once with ServingError.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from duelguard.classifier.units import Scores
from duelguard.errors import ServingError
from duelguard.fsio import DataError

T = TypeVar("T")
_TRANSIENT = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")


class GuardServingClient:
    """Scores texts with the Triton model `model_name` at `url` (host:grpc_port)."""

    def __init__(
        self,
        url: str,
        model_name: str = "duelguard",
        retries: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float | None = 300.0,
    ) -> None:
        import tritonclient.grpc as grpcclient

        self.url = url
        self.model_name = model_name
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._grpc = grpcclient
        self._client = grpcclient.InferenceServerClient(url)
        self._config: dict[str, Any] | None = None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GuardServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # transport ------------------------------------------------------------------------------------
    def _with_retries(self, call: Callable[[], T], what: str) -> T:
        from tritonclient.utils import InferenceServerException

        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return call()
            except InferenceServerException as exc:
                if str(exc.status()) not in _TRANSIENT:
                    raise ServingError(f"{what} at {self.url}: {exc.message()}") from None
                if attempt == self.retries:
                    raise ServingError(
                        f"{what}: Triton server at {self.url} unavailable after {self.retries} retries ({exc.message()})"
                    ) from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _model_config(self) -> dict[str, Any]:
        """The model's config (cached); ServingError naming the served models if it is missing."""
        if self._config is None:
            ready = self._with_retries(lambda: self._client.is_model_ready(self.model_name), "readiness check")
            if not ready:
                index = self._with_retries(lambda: self._client.get_model_repository_index(as_json=True), "index")
                names = sorted({m.get("name", "?") for m in index.get("models", [])}) or ["none"]
                raise ServingError(
                    f"model {self.model_name!r} is not loaded on the Triton server at {self.url} "
                    f"(models there: {', '.join(names)}); export it with `duelguard export-triton`"
                )
            response = self._with_retries(
                lambda: self._client.get_model_config(self.model_name, as_json=True), "model config"
            )
            self._config = response["config"]
        return self._config

    @property
    def max_batch_size(self) -> int:
        return int(self._model_config().get("max_batch_size", 1)) or 1

    @property
    def thresholds(self) -> np.ndarray:
        """Per-category thresholds of the served model version (from its config parameters)."""
        raw = self._model_config().get("parameters", {}).get("thresholds", {}).get("string_value")
        if raw is None:
            raise ServingError(f"model {self.model_name!r} at {self.url} has no thresholds parameter (re-export it)")
        return np.asarray(json.loads(raw), dtype=np.float32)

    def served_version(self) -> str | None:
        """The version the cached config belongs to (its version_policy specific), None if unnamed."""
        versions = self._model_config().get("version_policy", {}).get("specific", {}).get("versions", [])
        return str(versions[0]) if len(versions) == 1 else None

    # scoring --------------------------------------------------------------------------------------
    def infer_with_version(self, texts: Sequence[str]) -> tuple[Scores, str]:
        """One request (len(texts) <= max_batch_size): (Scores: SCORES (n, 12) float32, TRUNCATED (n,)
        bool (head_tail policy: only head and tail were scored), TOO_LONG (n,) bool (flag policy: past
        the cost bound, unsafe); the version that answered)."""
        rows = np.empty((len(texts), 1), dtype=object)
        for i, text in enumerate(texts):
            try:
                rows[i, 0] = text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise DataError(f"text {i}: cannot be encoded as UTF-8 ({exc.reason})") from None
        tensor = self._grpc.InferInput("TEXT", list(rows.shape), "BYTES")
        tensor.set_data_from_numpy(rows)
        outputs = [self._grpc.InferRequestedOutput(name) for name in ("SCORES", "TRUNCATED", "TOO_LONG")]
        result = self._with_retries(
            lambda: self._client.infer(self.model_name, [tensor], outputs=outputs, client_timeout=self.timeout_s),
            "inference",
        )
        flags = [result.as_numpy(name).reshape(-1).astype(bool) for name in ("TRUNCATED", "TOO_LONG")]
        return Scores(result.as_numpy("SCORES"), *flags), str(result.get_response().model_version)

    def infer_batch(self, texts: Sequence[str]) -> np.ndarray:
        """One request (len(texts) <= max_batch_size): SCORES (n, 12) float32."""
        return self.infer_with_version(texts)[0].probs

    def _score(self, texts: Sequence[str], batch_size: int | None) -> tuple[Scores, set[str]]:
        size = min(batch_size or self.max_batch_size, self.max_batch_size)
        parts = [self.infer_with_version(texts[i : i + size]) for i in range(0, len(texts), size)]
        if not parts:
            empty = np.zeros(0, dtype=bool)
            return Scores(np.zeros((0, 12), dtype=np.float32), empty, empty), set()
        scores = Scores(*(np.concatenate([p[0][k] for p in parts]) for k in range(3)))
        return scores, {p[1] for p in parts}

    def score(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """SCORES (len(texts), 12) in input order, sent in requests of at most the model's max batch size."""
        return self._score(texts, batch_size)[0].probs

    def score_versioned(self, texts: Sequence[str], batch_size: int | None = None) -> tuple[Scores, np.ndarray]:
        """(Scores, thresholds) where every row was answered by the version the thresholds belong to."""
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            scores, versions = self._score(texts, batch_size)
            for fresh in (False, True):
                if fresh:
                    self._config = None  # the server may have switched versions since the config was read
                served = self.served_version()
                if served is None or not versions or versions == {served}:
                    return scores, self.thresholds
            if attempt < self.retries:  # a switch is in flight: answers and config disagree for a moment
                time.sleep(delay)
                delay *= 2
        raise ServingError(
            f"model {self.model_name!r} at {self.url} answered from version(s) {sorted(versions)} but its config "
            f"serves {self.served_version()} after {self.retries} retries"
        )

    def classify_records(self, objs: Sequence[dict[str, Any]], batch_size: int | None = None) -> list[dict[str, Any]]:
        """The `duelguard predict` output objects for `objs` (`text` or `messages` each), over gRPC."""
        from duelguard.classifier.inference import text_of
        from duelguard.classifier.saved import output_record

        texts = [text_of(obj, f"input {i}") for i, obj in enumerate(objs, 1)]
        scores, thresholds = self.score_versioned(texts, batch_size)
        return [output_record(obj, row, thresholds, bool(t), bool(x))
                for obj, row, t, x in zip(objs, scores.probs, scores.truncated, scores.too_long)]
