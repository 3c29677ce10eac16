"""`duelguard predict` through the real console script: the docs/contracts.md contract, bad lines, blank text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from classifier_toy import toy_records

from duelguard.taxonomy import CATEGORIES

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A saved classifier directory (tiny backbone, untrained head: the CLI contract, not accuracy)."""
    import torch

    from duelguard.backbones import resolve_backbone
    from duelguard.classifier.model import GuardClassifier
    from duelguard.config import LongInput, load_params

    params = load_params(REPO_ROOT / "params.yaml", profile="tiny")
    root = tmp_path_factory.mktemp("predict")
    backbone = resolve_backbone(params.classifier.backbone, str(root / "weights"), corpus=[r["text"] for r in toy_records("train", 10)])
    torch.manual_seed(0)
    clf = GuardClassifier.from_backbone(backbone, max_length=32, chunk_overlap=8, pooling=params.classifier.pooling,
                                        long_input=LongInput(max_words=1000))
    clf.thresholds = np.full(12, 0.45, dtype=np.float32)
    return clf.save(root / "model")


def predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "duelguard.cli", "predict", *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300
    )


def test_predict_file_keeps_order_and_fields(model_dir: Path, tmp_path: Path) -> None:
    rows = [
        {"id": "a", "text": "how do I attack and stab my neighbour", "extra": [1, 2]},
        {"id": "b", "text": ""},
        {"id": "c", "messages": [{"role": "user", "content": "hola"}, {"role": "assistant", "content": "buenos dias"}]},
        {"id": "d", "text": "diese leute sind ungeziefer " * 40},
    ]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    proc = predict("--model", str(model_dir), "--input", str(src), "--output", str(dst), "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert [o["id"] for o in out] == ["a", "b", "c", "d"] and out[0]["extra"] == [1, 2] and "messages" in out[2]
    for o in out:
        assert list(o["categories"]) == list(CATEGORIES)
        assert all(0.0 <= p <= 1.0 for p in o["categories"].values())
        assert o["unsafe_score"] == pytest.approx(max(o["categories"].values()))
        assert o["unsafe"] == any(p > 0.45 for p in o["categories"].values())
    assert out[1]["unsafe_score"] == 0.0 and out[1]["unsafe"] is False  # empty text: defined, safe


def test_malformed_line_is_named_and_nothing_is_written(model_dir: Path, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"text": "fine"}\n{"text": "broken"\n{"text": "fine"}\n', encoding="utf-8")
    proc = predict("--model", str(model_dir), "--input", str(src), "--output", str(dst))
    assert proc.returncode == 2 and f"{src}:2: not valid JSON" in proc.stderr
    assert not dst.exists() and list(tmp_path.iterdir()) == [src]

    src.write_text('{"text": "fine"}\n{"id": 7}\n', encoding="utf-8")
    proc = predict("--model", str(model_dir), "--input", str(src), "--output", str(dst))
    assert proc.returncode == 2 and f"{src}:2: needs a 'text' string or a 'messages' list" in proc.stderr
    assert not dst.exists()


def test_text_option_prints_json_lines(model_dir: Path) -> None:
    proc = predict("--model", str(model_dir), "--text", "bonjour", "--text", "  ")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["bonjour", "  "] and lines[1]["unsafe_score"] == 0.0


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    proc = predict("--model", str(tmp_path), "--text", "hi")
    assert proc.returncode == 2 and "not a duelguard classifier directory" in proc.stderr


def test_onnx_runtimes_agree_with_torch_and_flag_too_long_texts(model_dir: Path, tmp_path: Path) -> None:
    """--runtime onnx / onnx-int8 export once into the weights cache and score like torch (INT8 within
    a quantisation tolerance); a text past the model's cost bound (1,000 words) is flagged too_long."""
    long_text = "diese leute sind ungeziefer und gehören weg " * 400  # 2,800 words
    rows = [{"text": t} for t in ("how do I attack and stab my neighbour", "bonjour", "", long_text)]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    env_cache = tmp_path / "cache"
    params = tmp_path / "params.yaml"
    params.write_text((REPO_ROOT / "params.yaml").read_text().replace("weights_cache: ~/.cache/duelguard",
                                                                      f"weights_cache: {env_cache}"))
    outputs = {}
    for runtime in ("torch", "onnx", "onnx-int8"):
        dst = tmp_path / f"{runtime}.jsonl"
        proc = subprocess.run(
            [sys.executable, "-m", "duelguard.cli", "--params", str(params), "predict", "--model", str(model_dir),
             "--input", str(src), "--output", str(dst), "--runtime", runtime],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
        assert proc.returncode == 0, proc.stderr
        outputs[runtime] = [json.loads(line) for line in dst.read_text().splitlines()]
    assert len(list((env_cache / "onnx").glob("*.onnx"))) == 2  # fp32 + int8, cached for the next run
    for runtime, tol in (("onnx", 1e-4), ("onnx-int8", 0.05)):
        for a, b in zip(outputs["torch"], outputs[runtime]):
            assert abs(a["unsafe_score"] - b["unsafe_score"]) < tol, runtime
    for runtime in outputs:
        assert [o["reason"] for o in outputs[runtime]] == [None, None, None, "too_long"] and outputs[runtime][3]["unsafe"]
    bad = predict("--model", str(model_dir), "--text", "hi", "--runtime", "tensorrt")
    assert bad.returncode == 2 and "--runtime must be one of" in bad.stderr
