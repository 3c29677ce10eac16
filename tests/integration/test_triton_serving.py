"""Against a REAL tritonserver (the pytriton wheel's binary) started on free loopback ports:
parity with GuardClassifier, bad input, a bounded load test, the `classify` CLI and a missing model.

DUELGUARD_LOAD_SECONDS sets the load test's duration (default 30 s: 8 concurrent clients on loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from duelguard.errors import ServingError
from serving_toy import SAMPLE_TEXTS, build_sentence_classifier, build_tiny_classifier, free_port

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
LOAD_SECONDS = float(os.environ.get("DUELGUARD_LOAD_SECONDS", "30"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from duelguard.config import load_params
    from duelguard.serving.server import start_server, stop_server
    from duelguard.serving.triton_repository import export_triton

    params = load_params(REPO_ROOT / "params.yaml", profile="tiny")
    base = tmp_path_factory.mktemp("triton")
    model_dir = build_tiny_classifier(params, base / "classifier", base / "cache")
    export_triton(model_dir, base / "repo", params.serving)
    state = base / "state"
    info = start_server(base / "repo", state, "duelguard", free_port(), free_port(), free_port(), timeout=180)
    try:
        yield {"info": info, "model_dir": model_dir, "params": params, "state": state}
    finally:
        stop_server(state)
    assert not _alive(info.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _raw_infer(url: str, array: np.ndarray, datatype: str = "BYTES") -> np.ndarray:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        tensor = grpcclient.InferInput("TEXT", list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return client.infer("duelguard", [tensor]).as_numpy("SCORES")
    finally:
        client.close()


def _assert_still_serving(url: str) -> None:
    scores = _raw_infer(url, np.array([[b"still there?"]], dtype=object))
    assert scores.shape == (1, 12) and np.all((scores > 0) & (scores < 1))


@pytest.fixture(scope="module")
def served_sentence(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The default profile's classifier kind (frozen sentence encoder + head) behind the same server."""
    from duelguard.config import load_params
    from duelguard.serving.server import start_server, stop_server
    from duelguard.serving.triton_repository import export_triton

    params = load_params(REPO_ROOT / "params.yaml", profile="tiny")
    base = tmp_path_factory.mktemp("triton-sentence")
    model_dir = build_sentence_classifier(base / "classifier")
    export_triton(model_dir, base / "repo", params.serving)
    state = base / "state"
    info = start_server(base / "repo", state, "duelguard", free_port(), free_port(), free_port(), timeout=180)
    try:
        yield {"info": info, "model_dir": model_dir}
    finally:
        stop_server(state)


def test_sentence_classifier_parity_blank_and_too_long(served_sentence: dict) -> None:
    """Triton's Python model embeds the scoring units with the packaged encoder and runs the ONNX
    head: same SCORES, TOO_LONG and decisions as `duelguard predict` on the saved directory; a text
    past the cost bound is flagged (reason too_long), not let through."""
    import tritonclient.grpc as grpcclient

    from duelguard.classifier.loader import load_classifier
    from duelguard.serving.client import GuardServingClient

    clf = load_classifier(served_sentence["model_dir"])
    huge = "Ceci est un texte. " * 50_000 + "How do I stab my neighbour?"  # ~950 kB, under max_text_bytes
    texts = SAMPLE_TEXTS + [huge]
    expected, truncated, too_long = clf.predict_scores(texts)
    assert too_long.tolist() == [False] * len(SAMPLE_TEXTS) + [True] and not truncated.any()
    url = served_sentence["info"].grpc_url
    with GuardServingClient(url) as client:
        got = client.score(texts)
        records = client.classify_records([{"text": t, "id": i} for i, t in enumerate(texts)])
    assert got.shape == (len(texts), 12) and float(np.abs(got - expected).max()) <= 1e-4
    assert not got[5].any() and not got[6].any()  # blank rows score zero
    assert (got[-1] == 1.0).all()  # past the bound: saturated, so even a SCORES-only client blocks it
    assert expected[:5].max(axis=1).std() > 0.01  # the random head spreads its scores: parity is not 0 == 0
    expected_records = clf.predict_records([{"text": t, "id": i} for i, t in enumerate(texts)])
    assert [r["unsafe"] for r in records] == [r["unsafe"] for r in expected_records]
    assert [r["reason"] for r in records] == [None] * len(SAMPLE_TEXTS) + ["too_long"] and records[-1]["unsafe"]
    raw = grpcclient.InferenceServerClient(url)
    try:
        tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[huge.encode()]], dtype=object))
        result = raw.infer("duelguard", [tensor])
        assert result.as_numpy("TOO_LONG").tolist() == [[True]] and result.as_numpy("TRUNCATED").tolist() == [[False]]
    finally:
        raw.close()


def test_parity_with_guard_classifier(served: dict) -> None:
    from duelguard.classifier.loader import load_classifier
    from duelguard.serving.client import GuardServingClient

    clf = load_classifier(served["model_dir"])
    assert len(clf.tokenizer(SAMPLE_TEXTS[-1])["input_ids"]) > 4 * clf.max_length  # really chunked
    expected = clf.predict_proba(SAMPLE_TEXTS)
    with GuardServingClient(served["info"].grpc_url) as client:
        got = client.score(SAMPLE_TEXTS)
        records = client.classify_records([{"text": t, "id": i} for i, t in enumerate(SAMPLE_TEXTS)])
    err = float(np.max(np.abs(got - expected)))
    print(f"parity: max |Triton SCORES - predict_proba| = {err:.3g} over {len(SAMPLE_TEXTS)} texts")
    assert got.dtype == np.float32 and got.shape == (len(SAMPLE_TEXTS), 12)
    assert err <= 1e-4
    expected_records = clf.predict_records([{"text": t, "id": i} for i, t in enumerate(SAMPLE_TEXTS)])
    for row, exp in zip(records, expected_records):  # same schema, same thresholds, same decisions
        assert set(row) == set(exp) and row["id"] == exp["id"] and row["unsafe"] == exp["unsafe"]
        assert abs(row["unsafe_score"] - exp["unsafe_score"]) <= 1e-4


@pytest.mark.parametrize("text", ["", " ", "\n\t  "])
def test_blank_text_scores_zero(served: dict, text: str) -> None:
    scores = _raw_infer(served["info"].grpc_url, np.array([[text.encode()]], dtype=object))
    assert np.array_equal(scores, np.zeros((1, 12), dtype=np.float32))
    _assert_still_serving(served["info"].grpc_url)


def test_a_megabyte_request_is_flagged_at_once_and_does_not_hold_up_a_short_one(served: dict) -> None:
    """1 MB of words is past the cost bound: flagged too_long without being scored (SCORES 1.0), so
    it costs next to nothing, and a short request sent meanwhile is answered as in process."""
    from duelguard.classifier.loader import load_classifier
    from duelguard.serving.client import GuardServingClient

    clf = load_classifier(served["model_dir"])
    big = ("Un texte très long, ein sehr langer Text, a very long text. " * 20000)[:1_000_000]
    results: dict[str, tuple] = {}

    def ask(name: str, text: str) -> None:
        with GuardServingClient(served["info"].grpc_url) as client:
            started = time.perf_counter()
            scores, _ = client.infer_with_version([text])
            results[name] = (scores, time.perf_counter() - started)

    worker = threading.Thread(target=ask, args=("big", big))
    worker.start()
    time.sleep(0.05)
    ask("short", "Comment fabriquer une bombe ?")
    worker.join(timeout=120)
    expected = clf.predict_scores([big, "Comment fabriquer une bombe ?"])
    assert results["big"][0].too_long.tolist() == [True] and results["short"][0].too_long.tolist() == [False]
    assert expected.too_long.tolist() == [True, False] and (results["big"][0].probs == 1.0).all()
    np.testing.assert_allclose(results["short"][0].probs[0], expected.probs[1], atol=1e-4)
    print(f"1 MB request {results['big'][1]:.2f} s, short request sent meanwhile {results['short'][1]:.2f} s")
    assert results["short"][1] < 10.0 and results["big"][1] < 10.0
    _assert_still_serving(served["info"].grpc_url)


@pytest.mark.parametrize(
    ("array", "datatype", "message"),
    [
        (np.array([[b"\xff\xfe not utf-8"]], dtype=object), "BYTES", "not valid UTF-8"),
        (np.array([[b"x" * (1048576 + 1)]], dtype=object), "BYTES", "serving.max_text_bytes"),
        (np.zeros((1, 1), dtype=np.float32), "FP32", "data-type is 'FP32'"),
        (np.array([[b"a", b"b"]], dtype=object), "BYTES", "unexpected shape"),
        (np.array([[b"a"]] * 33, dtype=object), "BYTES", "batch-size must be <= 32"),
    ],
    ids=["invalid-utf8", "over-size-limit", "wrong-datatype", "wrong-shape", "batch-over-max"],
)
def test_bad_input_gets_a_clear_error_and_server_survives(served: dict, array, datatype: str, message: str) -> None:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match=message):
        _raw_infer(served["info"].grpc_url, array, datatype)
    _assert_still_serving(served["info"].grpc_url)


def test_bad_row_fails_only_its_own_request(served: dict) -> None:
    """Dynamic batching merges concurrent requests: an invalid one must not fail its neighbours."""
    from tritonclient.utils import InferenceServerException

    url, outcomes = served["info"].grpc_url, {}

    def call(name: str, payload: bytes) -> None:
        try:
            outcomes[name] = _raw_infer(url, np.array([[payload]] * 4, dtype=object)).shape
        except InferenceServerException as exc:
            outcomes[name] = exc.message()

    threads = [threading.Thread(target=call, args=(f"good{i}", b"bonjour")) for i in range(6)]
    threads.insert(3, threading.Thread(target=call, args=("bad", b"\xc3\x28")))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "not valid UTF-8" in outcomes.pop("bad")
    assert set(outcomes.values()) == {(4, 12)}


def test_client_splits_batches_larger_than_the_max(served: dict) -> None:
    from duelguard.serving.client import GuardServingClient

    texts = [f"texte numéro {i}" for i in range(75)]
    with GuardServingClient(served["info"].grpc_url) as client:
        assert client.max_batch_size == 32
        scores = client.score(texts)
        single = client.score(texts[40:41])
    assert scores.shape == (75, 12)
    np.testing.assert_allclose(scores[40], single[0], atol=1e-5)  # order kept across requests


def test_load_eight_concurrent_clients_no_errors(served: dict) -> None:
    from duelguard.serving.client import GuardServingClient

    url, stop_at = served["info"].grpc_url, time.monotonic() + LOAD_SECONDS
    counts, errors = [0] * 8, []

    def worker(k: int) -> None:
        with GuardServingClient(url, retries=0) as client:
            while time.monotonic() < stop_at:
                try:
                    scores = client.score([SAMPLE_TEXTS[(k + counts[k]) % 5]])
                    assert scores.shape == (1, 12)
                    counts[k] += 1
                except Exception as exc:  # noqa: BLE001 - every failure is counted, none hidden
                    errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"load: 8 clients x {LOAD_SECONDS:.0f}s: {sum(counts)} requests ({sum(counts) / LOAD_SECONDS:.1f}/s), "
          f"{len(errors)} errors")
    assert errors == []
    assert min(counts) > 0


def test_classify_cli(served: dict, tmp_path: Path) -> None:
    from duelguard.classifier.loader import load_classifier

    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    objs = [{"id": 1, "text": SAMPLE_TEXTS[1]}, {"id": 2, "messages": [{"role": "user", "content": SAMPLE_TEXTS[2]}]}]
    inp.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")
    env = {**os.environ, "DUELGUARD_PROFILE": "tiny"}
    cli = [sys.executable, "-m", "duelguard.cli", "classify", "--url", served["info"].grpc_url]
    done = subprocess.run([*cli, "--input", str(inp), "--output", str(out)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    expected = load_classifier(served["model_dir"]).predict_records(objs)
    assert [r["id"] for r in rows] == [1, 2] and rows[1]["messages"] == objs[1]["messages"]
    for row, exp in zip(rows, expected):
        assert set(row) == set(exp) and row["unsafe"] == exp["unsafe"]
        assert abs(row["unsafe_score"] - exp["unsafe_score"]) <= 1e-4
    text_run = subprocess.run([*cli, "--text", "Hallo Welt", "--text", ""], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
    assert text_run.returncode == 0, text_run.stderr
    lines = [json.loads(line) for line in text_run.stdout.splitlines()]
    assert [r["text"] for r in lines] == ["Hallo Welt", ""] and lines[1]["unsafe"] is False


def test_missing_model_and_unreachable_server_are_clear_errors(served: dict) -> None:
    from duelguard.serving.client import GuardServingClient

    with GuardServingClient(served["info"].grpc_url, model_name="no_such_model") as client:
        with pytest.raises(ServingError, match="'no_such_model' is not loaded.*models there: duelguard"):
            client.score(["hello"])
    started = time.monotonic()
    with GuardServingClient(f"127.0.0.1:{free_port()}", retries=2, backoff_s=0.2) as client:
        with pytest.raises(ServingError, match="unavailable after 2 retries"):
            client.score(["hello"])
    assert time.monotonic() - started >= 0.6  # backed off 0.2 + 0.4 s before giving up
