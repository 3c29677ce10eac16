"""The Triton Python-backend model `duelguard`: TEXT (one UTF-8 string per row) -> SCORES (FP32, 12),
TRUNCATED (BOOL: the text was past the cost bound and, by the `head_tail` policy, only its head and
tail were scored) and TOO_LONG (BOOL: past the bound under the `flag` policy: not scored, SCORES all
1.0, so even a client that reads only SCORES blocks it).

This file is copied verbatim into every exported repository as <model>/<version>/model.py; it runs
inside Triton's Python backend stub, not in the duelguard process. It imports the installed
`duelguard` package (the stub's interpreter is the venv's python3, see duelguard.serving.server) so
that de-obfuscation, the scoring units, the cost bound, tokenisation and the empty-text rule are the
very functions `duelguard predict` uses (duelguard.classifier.units.score_texts) — parity is by
construction, not by copy.

The network itself runs either
- locally, with ONNX Runtime on <version>/model.onnx (the pytriton wheel's server has only the
  Python backend), or
- on NVIDIA's Triton image, by a BLS call to the native ONNX Runtime / TensorRT model named in the
  config parameter `network_model` (see services/triton/README.md).

Per-request failures (invalid UTF-8, a text over the size limit) become a TritonError for that
request only; the other requests of the dynamic batch are answered normally.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from duelguard.classifier.onnx_export import ONNX_FILE
from duelguard.classifier.saved import SENTENCE, kind_of, read_metadata
from duelguard.classifier.units import Scores, language_offsets_of, long_input_of, score_texts


class TritonPythonModel:
    """Tokenise + chunk in Python, run the network, sigmoid and max over each text's chunks."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        meta = read_metadata(version_dir)
        self.max_length = int(meta["max_length"])
        self.overlap = int(meta["chunk_overlap"])
        self.long_input = long_input_of(meta)
        self.language_offsets = language_offsets_of(meta)
        self.num_labels = len(meta["taxonomy"])
        self.max_text_bytes = int(parameters["max_text_bytes"])
        self.chunk_batch_size = int(parameters["chunk_batch_size"])
        # A sentence classifier embeds its units with the packaged encoder and runs only its head as
        # the network; a token model tokenises.
        self.sentence = kind_of(meta) == SENTENCE
        if self.sentence:
            from duelguard.encoder import embed

            self.embed = embed
        else:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(version_dir)
        self.network_model = parameters.get("network_model", "")
        # The network model of the same registry version (export writes both under one number): during
        # a version switch this front model never calls the other version's network.
        self.version = int(args["model_version"])
        if not self.network_model:
            from duelguard.classifier.runtime import cpu_session

            self.session = cpu_session(version_dir / ONNX_FILE, int(parameters.get("onnx_threads", "0")))

    def _logits(self, **feeds: np.ndarray) -> np.ndarray:
        if not self.network_model:
            return self.session.run(["logits"], feeds)[0]
        request = pb_utils.InferenceRequest(
            model_name=self.network_model,
            model_version=self.version,
            requested_output_names=["logits"],
            inputs=[pb_utils.Tensor(name, value) for name, value in feeds.items()],
        )
        response = request.exec()
        if response.has_error():
            raise pb_utils.TritonModelException(response.error().message())
        return pb_utils.get_output_tensor_by_name(response, "logits").as_numpy()

    def _decode(self, row: Any, index: int) -> str:
        raw = row if isinstance(row, bytes) else str(row).encode("utf-8")
        if len(raw) > self.max_text_bytes:
            raise ValueError(
                f"TEXT row {index} is {len(raw)} bytes; the limit is {self.max_text_bytes} (serving.max_text_bytes)"
            )
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"TEXT row {index} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None

    def _unit_probs(self, units: list[str]) -> np.ndarray:
        """(len(units), C) probabilities of scoring units: embedded + head (sentence classifier), or
        token windows through the network (token model), in batches of chunk_batch_size."""
        if self.sentence:
            vectors = self.embed(units)
            logits = np.concatenate([self._logits(embedding=vectors[i : i + self.chunk_batch_size])
                                     for i in range(0, len(vectors), self.chunk_batch_size)])
            return 1.0 / (1.0 + np.exp(-logits))
        from duelguard.classifier.inference import token_unit_probs

        def window_probs(input_ids: Any, attention: Any) -> np.ndarray:
            logits = self._logits(input_ids=input_ids.numpy(), attention_mask=attention.numpy())
            return 1.0 / (1.0 + np.exp(-logits))

        return token_unit_probs(self.tokenizer, units, self.max_length, self.overlap, self.chunk_batch_size,
                                window_probs, self.num_labels)

    def _scores(self, texts: list[str]) -> Scores:
        """The units, bound, language offsets, batching and max rule of GuardClassifier / SentenceGuard.predict_scores."""
        return score_texts(texts, self._unit_probs, self.num_labels, self.max_length, self.overlap, self.long_input,
                           self.language_offsets)

    def execute(self, requests: list[Any]) -> list[Any]:
        texts: list[str] = []
        spans: list[tuple[int, int] | str] = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            try:
                decoded = [self._decode(row, i) for i, row in enumerate(rows)]
            except ValueError as exc:
                spans.append(str(exc))
                continue
            spans.append((len(texts), len(texts) + len(decoded)))
            texts.extend(decoded)
        scores, truncated, too_long = self._scores(texts)
        responses = []
        for span in spans:
            if isinstance(span, str):
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(span)))
                continue
            rows = slice(span[0], span[1])
            out = [pb_utils.Tensor("SCORES", scores[rows].astype(np.float32)),
                   pb_utils.Tensor("TRUNCATED", truncated[rows].reshape(-1, 1)),
                   pb_utils.Tensor("TOO_LONG", too_long[rows].reshape(-1, 1))]
            responses.append(pb_utils.InferenceResponse(output_tensors=out))
        return responses
