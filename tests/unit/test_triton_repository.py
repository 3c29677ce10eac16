"""The exported Triton repository: layout, generated config (parsed with Triton's own protobuf
schema), labels, the ONNX parity check, the NVIDIA variant and bad model references."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from duelguard.errors import ModelNotFoundError
from duelguard.taxonomy import CATEGORIES
from serving_toy import SAMPLE_TEXTS, THRESHOLDS, build_tiny_classifier

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from duelguard.config import load_params

    base = tmp_path_factory.mktemp("clf")
    return build_tiny_classifier(load_params(REPO_PARAMS, profile="tiny"), base / "model", base / "cache")


def _parse_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def test_local_repository_is_complete_and_follows_params(classifier_dir: Path, tmp_path: Path, tiny_params) -> None:
    from duelguard.serving.triton_repository import export_triton

    model_dir = export_triton(classifier_dir, tmp_path / "repo", tiny_params.serving)
    assert model_dir == tmp_path / "repo" / "duelguard"
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["duelguard"]  # no staging left behind
    version = model_dir / "1"
    for name in ("model.py", "model.onnx", "duelguard.json", "tokenizer.json"):
        assert (version / name).is_file(), name
    import duelguard.serving

    assert (version / "model.py").read_bytes() == Path(duelguard.serving.__file__).with_name("triton_model.py").read_bytes()
    config = _parse_config(model_dir / "config.pbtxt")
    serving = tiny_params.serving
    assert config.name == "duelguard" and config.backend == "python"
    assert config.max_batch_size == serving.max_batch_size
    assert [i.name for i in config.input] == ["TEXT"] and list(config.input[0].dims) == [1]
    assert config.output[0].name == "SCORES" and list(config.output[0].dims) == [12]
    assert config.output[0].label_filename == "labels.txt"
    assert list(config.dynamic_batching.preferred_batch_size) == serving.preferred_batch_sizes
    assert config.dynamic_batching.max_queue_delay_microseconds == serving.max_queue_delay_us
    assert config.instance_group[0].count == serving.instance_count
    assert list(config.version_policy.specific.versions) == [1]  # exactly the exported version is served
    assert json.loads(config.parameters["thresholds"].string_value) == pytest.approx(THRESHOLDS)
    assert "network_model" not in config.parameters
    assert (model_dir / "labels.txt").read_text().split() == list(CATEGORIES)
    meta = json.loads((version / "duelguard.json").read_text())
    assert meta["onnx_max_abs_diff"] < 1e-4 and meta["max_length"] == tiny_params.classifier.max_length


def test_onnx_matches_torch_and_drift_is_caught(classifier_dir: Path, tmp_path: Path, tiny_params) -> None:
    import torch

    from duelguard.classifier.loader import load_classifier
    from duelguard.classifier.onnx_export import OnnxExportError, export_onnx, verify_onnx

    clf = load_classifier(classifier_dir)
    onnx_path = export_onnx(clf.model, tmp_path / "m.onnx", tiny_params.serving.onnx_opset)
    diff = verify_onnx(onnx_path, clf.model, clf.tokenizer, SAMPLE_TEXTS[:5], clf.max_length)
    assert 0 <= diff < 1e-4
    with torch.no_grad():  # the torch model drifts from the exported file: verification must fail
        clf.model.score.weight.add_(torch.randn_like(clf.model.score.weight))
    with pytest.raises(OnnxExportError, match="differ from torch"):
        verify_onnx(onnx_path, clf.model, clf.tokenizer, SAMPLE_TEXTS[:5], clf.max_length)


def test_nvidia_target_adds_native_network_model(classifier_dir: Path, tmp_path: Path, tiny_params) -> None:
    from duelguard.serving.triton_repository import NETWORK_MODEL, export_triton

    model_dir = export_triton(classifier_dir, tmp_path / "repo", tiny_params.serving, target="nvidia")
    main = _parse_config(model_dir / "config.pbtxt")
    network = _parse_config(tmp_path / "repo" / NETWORK_MODEL / "config.pbtxt")
    assert main.parameters["network_model"].string_value == NETWORK_MODEL
    assert network.platform == "onnxruntime_onnx"
    assert [i.name for i in network.input] == ["input_ids", "attention_mask"]
    assert (tmp_path / "repo" / NETWORK_MODEL / "1" / "model.onnx").is_file()
    assert not (model_dir / "1" / "model.onnx").exists()  # the network lives in one place only
    assert list(network.version_policy.specific.versions) == [1] == list(main.version_policy.specific.versions)


def test_bad_model_reference_is_a_clear_error(tmp_path: Path, tiny_params) -> None:
    from duelguard.serving.triton_repository import export_triton

    with pytest.raises(ModelNotFoundError, match="no duelguard.json"):
        export_triton(tmp_path / "nowhere", tmp_path / "repo", tiny_params.serving)
    assert not (tmp_path / "repo" / "duelguard").exists()



_KILL_AFTER_FIRST_CONFIG = """
import os, signal, sys
from pathlib import Path
import duelguard.serving.triton_repository as repository
from duelguard.config import load_params
write = repository.atomic_write_text
def write_then_die(path, text):
    write(path, text)
    if Path(path).name == "config.pbtxt":  # SIGKILL the moment the first model config is on disk
        os.kill(os.getpid(), signal.SIGKILL)
repository.atomic_write_text = write_then_die
params = load_params(sys.argv[1], profile="tiny")
repository.export_triton(sys.argv[2], Path(sys.argv[3]), params.serving, target="nvidia")
"""


def test_nvidia_export_killed_between_models_never_leaves_a_front_model_without_its_network(
        classifier_dir: Path, tmp_path: Path, tiny_params) -> None:
    """A real process SIGKILLed right after the first config.pbtxt of an NVIDIA export is written. The
    front model (`duelguard`, what clients call) must not be loadable then: with it first, a server
    started on this repository is Ready and fails every request (its BLS call finds no network model).
    Network first: the network is complete and the front model absent, so the server is not Ready and
    the next export (a restarted container) completes the repository."""
    import subprocess
    import sys

    from duelguard.serving.triton_repository import NETWORK_MODEL, export_triton, served_ref

    repo = tmp_path / "repo"
    done = subprocess.run([sys.executable, "-c", _KILL_AFTER_FIRST_CONFIG, str(REPO_PARAMS), str(classifier_dir),
                           str(repo)], capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    network = _parse_config(repo / NETWORK_MODEL / "config.pbtxt")
    assert list(network.version_policy.specific.versions) == [1]
    assert (repo / NETWORK_MODEL / "1" / "model.onnx").is_file()  # committed: version directory, then config
    assert not (repo / "duelguard" / "config.pbtxt").exists()  # no front model to be Ready and fail
    assert served_ref(repo, "duelguard") is None

    export_triton(classifier_dir, repo, tiny_params.serving, target="nvidia")  # the restarted export completes it
    front = _parse_config(repo / "duelguard" / "config.pbtxt")
    assert front.parameters["network_model"].string_value == NETWORK_MODEL
    assert (repo / NETWORK_MODEL / "1" / "model.onnx").is_file() and (repo / "duelguard" / "1" / "model.py").is_file()
    assert sorted(p.name for p in repo.iterdir()) == ["duelguard", NETWORK_MODEL]  # no staging left behind
