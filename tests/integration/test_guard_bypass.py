"""The guard cannot be walked around, checked as an attacker would, over gRPC against a REAL
tritonserver serving a REAL (small) guard: the packaged multilingual encoder under a head trained
here by the project's own code (fit_head, with its context-window rows) on the behavioural suite.

- an unsafe request placed at the start, in the middle and at the end of benign padding of 100,
  1,000 and 100,000 words, in en/fr/es/de, is flagged every time (100,000 words is past the cost
  bound: flagged `too_long` without being scored), while a short request sent meanwhile is answered
  promptly and the padding alone is let through;
- the same request disguised (zero-width characters, look-alike letters, full-width, spaced out)
  is flagged.
The texts are duelguard.suite.bypass's: a weather report the classifier never saw.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from duelguard.suite.bypass import REQUESTS, cases, pad
from serving_toy import free_port

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A SentenceGuard trained here on the suite and the benign context sentences (+ context-window
    rows built from them, as training does), served by tritonserver."""
    from duelguard.classifier.data import context_windows
    from duelguard.classifier.sentence import SentenceGuard, first_window, fit_head
    from duelguard.config import LongInput, load_params
    from duelguard.encoder import ENCODER, ENCODER_DIM, embed
    from duelguard.serving.server import start_server, stop_server
    from duelguard.serving.triton_repository import export_triton
    from duelguard.suite import LANGUAGES, suite_records
    from duelguard.suite.variants import context_sentences

    params = load_params(REPO_ROOT / "params.yaml", profile="tiny")
    benign = [{"id": f"ctx-{lang}-{k}", "lang": lang, "text": text, "labels": [0] * 12}
              for lang in LANGUAGES for k, text in enumerate(context_sentences(lang))]
    rows = suite_records() + benign
    rows = rows + context_windows(rows, 1.0, 64, seed=0)
    clf = SentenceGuard.fresh(ENCODER, ENCODER_DIM, 128, 0.1, 64, 16, LongInput(max_words=5000))
    vectors = embed([first_window(r["text"], 64) for r in rows])
    fit_head(clf, [(vectors, np.array([r["labels"] for r in rows]), None)], 3e-3, 64, 60, 8, 0.0, seed=0, progress=False)
    # A small head on a thousand rows is not well calibrated (benign weather sentences score up to
    # ~0.9, these requests ~1.0): a high threshold, checked by the first test below, since what is
    # tested here is how a text is read, not the head's calibration.
    clf.thresholds[:] = 0.97
    base = tmp_path_factory.mktemp("bypass")
    model_dir = clf.save(base / "classifier")
    export_triton(model_dir, base / "repo", params.serving)
    state = base / "state"
    info = start_server(base / "repo", state, "duelguard", free_port(), free_port(), free_port(), timeout=180)
    try:
        yield {"url": info.grpc_url, "classifier": clf}
    finally:
        stop_server(state)


def test_the_requests_alone_are_flagged_and_the_padding_alone_is_not(guard: dict) -> None:
    """What makes the padding test meaningful: the guard knows the requests and the padding is benign."""
    from duelguard.serving.client import GuardServingClient

    texts = list(REQUESTS.values()) + [pad(lang, words) for lang in REQUESTS for words in (100, 1000)]
    with GuardServingClient(guard["url"]) as client:
        records = client.classify_records([{"text": t} for t in texts])
    assert [r["unsafe"] for r in records] == [True] * 4 + [False] * 8


def test_a_request_inside_padding_is_flagged_at_every_place_length_and_language(guard: dict) -> None:
    from duelguard.serving.client import GuardServingClient

    probe = cases()
    texts = [text for *_, text in probe]
    short: dict[str, float] = {}

    def ask_short() -> None:  # sent while the long requests are in flight
        time.sleep(0.2)
        with GuardServingClient(guard["url"]) as client:
            started = time.perf_counter()
            record = client.classify_records([{"text": REQUESTS["fr"]}])[0]
            short["seconds"], short["unsafe"] = time.perf_counter() - started, record["unsafe"]

    worker = threading.Thread(target=ask_short)
    worker.start()
    with GuardServingClient(guard["url"]) as client:
        records = []
        for text in texts:  # one request each, as a gateway would send them
            records += client.classify_records([{"text": text}])
    worker.join(timeout=120)
    missed = [case[:3] for case, r in zip(probe, records) if not r["unsafe"]]
    assert len(records) == 36 and missed == [], f"let through: {missed}"
    assert all(r["reason"] == ("too_long" if case[1] == 100_000 else None) for case, r in zip(probe, records))
    print(f"short request beside the padded ones: {short['seconds']:.2f} s")
    assert short["unsafe"] and short["seconds"] < 10.0


@pytest.mark.parametrize("kind", ["zero_width", "homoglyph", "fullwidth", "spaced"])
def test_a_disguised_request_is_flagged(guard: dict, kind: str) -> None:
    from duelguard.serving.client import GuardServingClient
    from duelguard.suite.variants import obfuscate

    with GuardServingClient(guard["url"]) as client:
        records = client.classify_records([{"text": obfuscate(t, kind)} for t in REQUESTS.values()])
    assert [r["unsafe"] for r in records] == [True] * 4
