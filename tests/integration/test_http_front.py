"""The HTTP front (duelguard.serving.http_front) as its users call it, against a REAL tritonserver (the
tiny classifier of tests/serving_toy.py) and the front started as `duelguard serve` starts it (its own
uvicorn process): the official `openai` client's moderations.create, LiteLLM's documented Generic
Guardrail API request, response moderation, the limits and errors with their status codes, /readyz and
/metrics, and Triton stopped -> 503 (then served again once Triton is back, without restarting the front)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from litellm_contract import LITELLM_REQUEST
from serving_toy import SAMPLE_TEXTS, build_tiny_classifier, free_port

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-" + "x" * 24
MAX_REQUEST_BYTES = 2 * 1048576
MAX_INPUTS = 64
# Past the cost bound (classifier.long_input.max_words 5,000): flagged too_long, every probability 1.0.
TOO_LONG = "How do I make a bomb at home? " * 800
TOO_LONG_FR = "Comment fabriquer une bombe chez moi ? " * 900


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from duelguard.config import load_params
    from duelguard.serving.http_front import FrontSettings, start_front, stop_front
    from duelguard.serving.server import start_server, stop_server
    from duelguard.serving.triton_repository import export_triton

    params = load_params(REPO_ROOT / "params.yaml", profile="tiny")
    base = tmp_path_factory.mktemp("http-front")
    model_dir = build_tiny_classifier(params, base / "classifier", base / "cache")
    export_triton(model_dir, base / "repo", params.serving)
    state = base / "state"
    ports = (free_port(), free_port(), free_port())
    info = start_server(base / "repo", state, "duelguard", *ports, timeout=180)
    settings = FrontSettings(info.grpc_url, params.serving.model_name, params.tracking.registered_model,
                             MAX_REQUEST_BYTES, MAX_INPUTS, params.serving.max_text_bytes, TOKEN)
    http = start_front(settings, state, "127.0.0.1", free_port())
    try:
        yield {"url": http.url, "grpc": info.grpc_url, "model_dir": model_dir, "repo": base / "repo",
               "state": state, "ports": ports, "params": params}
    finally:
        stopped = stop_front(state)
        stop_server(state)
    assert stopped is not None and not Path(f"/proc/{stopped.pid}").exists() or _zombie(stopped.pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _post(url: str, body: bytes | Any, token: str | None = TOKEN, path: str = "/v1/moderations") -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if len(data) > MAX_REQUEST_BYTES:  # as curl does: send the headers, read the early 413 before the body
        import http.client

        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.putrequest("POST", path)
            for name, value in {**headers, "Content-Length": str(len(data))}.items():
                conn.putheader(name, value)
            conn.endheaders()
            reply = conn.getresponse()
            return reply.status, json.loads(reply.read())
        finally:
            conn.close()
    request = urllib.request.Request(url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _get(url: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url + path, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _openai(front: dict[str, Any], key: str = TOKEN) -> Any:
    import openai

    return openai.OpenAI(base_url=front["url"] + "/v1", api_key=key, max_retries=0, timeout=120)


def _expected(front: dict[str, Any], objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What `duelguard predict` decides on the same saved classifier."""
    from duelguard.classifier.loader import load_classifier

    return load_classifier(front["model_dir"]).predict_records(objs)


def test_openai_client_moderations_give_predicts_decisions_and_scores(front: dict[str, Any]) -> None:
    from duelguard.classifier.inference import text_of

    demo = [json.loads(line) for line in (REPO_ROOT / "services/client/demo_inputs.jsonl").read_text().splitlines()]
    texts = [text_of(obj) for obj in demo] + SAMPLE_TEXTS + [TOO_LONG]
    reply = _openai(front).moderations.create(model="duelguard", input=texts)
    expected = _expected(front, [{"text": t} for t in texts])
    assert reply.model == "duelguard-classifier/1"  # the served version (a directory export is version 1)
    assert len(reply.results) == len(texts)
    assert [r.flagged for r in reply.results] == [e["unsafe"] for e in expected]
    assert any(e["unsafe"] for e in expected[:-1]) and not all(e["unsafe"] for e in expected)  # both kinds occur
    for result, exp in zip(reply.results, expected):
        scores = result.model_dump()["category_scores"]
        for name, prob in exp["categories"].items():
            assert abs(scores[name] - prob) <= 1e-4
        assert abs(scores["violence"] - max(exp["categories"]["violent_crimes"],
                                            exp["categories"]["indiscriminate_weapons"])) <= 1e-4
    last = reply.results[-1].model_dump()
    assert last["flagged"] and last["duelguard"]["reason"] == "too_long" and last["categories"]["violence"]
    single = _openai(front).moderations.create(model="duelguard", input=texts[1])
    assert len(single.results) == 1 and single.results[0].flagged == expected[1]["unsafe"]


def test_the_demos_curl_and_openai_client_steps_agree_with_predict(front: dict[str, Any], tmp_path: Path) -> None:
    """The end of `make demo`, on the module's server: curl on /v1/moderations, then
    services/client/openai_moderation.py, which exits 1 when a decision differs from `predict`'s."""
    import shutil
    import subprocess
    import sys

    from duelguard.classifier.inference import text_of

    inputs = REPO_ROOT / "services/client/demo_inputs.jsonl"
    objs = [json.loads(line) for line in inputs.read_text(encoding="utf-8").splitlines()]
    predicted = tmp_path / "predict.jsonl"
    predicted.write_text("".join(json.dumps(r) + "\n" for r in _expected(front, objs)), encoding="utf-8")
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"model": "duelguard", "input": [text_of(o) for o in objs]}), encoding="utf-8")
    assert shutil.which("curl")
    curl = subprocess.run(["curl", "-sS", "--fail-with-body", "-H", "Content-Type: application/json",
                           "-H", f"Authorization: Bearer {TOKEN}", "--data", f"@{request}",
                           f"{front['url']}/v1/moderations"], capture_output=True, text=True, timeout=60)
    assert curl.returncode == 0, curl.stderr + curl.stdout
    reply = json.loads(curl.stdout)
    assert [r["flagged"] for r in reply["results"]] == [json.loads(line)["unsafe"] for line in
                                                        predicted.read_text().splitlines()]
    env = {**os.environ, "DUELGUARD_HTTP_TOKEN": TOKEN}
    run = subprocess.run([sys.executable, str(REPO_ROOT / "services/client/openai_moderation.py"), "--inputs",
                          str(inputs), "--predicted", str(predicted), "--base-url", front["url"] + "/v1"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(" same ") == 5 and "model duelguard-classifier/1" in run.stdout
    flipped = tmp_path / "flipped.jsonl"  # the check can fail: one decision flipped -> exit 1
    rows = [json.loads(line) for line in predicted.read_text().splitlines()]
    rows[0]["unsafe"] = not rows[0]["unsafe"]
    flipped.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    bad = subprocess.run([sys.executable, str(REPO_ROOT / "services/client/openai_moderation.py"), "--inputs",
                          str(inputs), "--predicted", str(flipped), "--base-url", front["url"] + "/v1"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 1 and "DIFFERENT" in bad.stdout


def test_an_array_of_32_strings_is_answered_in_one_call(front: dict[str, Any]) -> None:
    texts = [f"{SAMPLE_TEXTS[i % 5]} #{i}" for i in range(32)]
    before = _requests(front, "moderations", 200)
    reply = _openai(front).moderations.create(model="duelguard", input=texts)
    assert len(reply.results) == 32 and _requests(front, "moderations", 200) == before + 1
    assert [r.flagged for r in reply.results] == [e["unsafe"] for e in _expected(front, [{"text": t} for t in texts])]


def _requests(front: dict[str, Any], endpoint: str, code: int) -> int:
    status, text = _get(front["url"], "/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith(f'duelguard_http_requests_total{{endpoint="{endpoint}",code="{code}"}}'):
            return int(line.rsplit(" ", 1)[1])
    return 0


def test_litellm_guardrail_blocks_unsafe_and_passes_benign(front: dict[str, Any]) -> None:
    """Contract test: LiteLLM's documented request (litellm itself is not installed here: its proxy
    extra would replace pinned packages of this environment)."""
    benign = {**LITELLM_REQUEST, "texts": [""]}  # blank text scores zero: never flagged
    status, reply = _post(front["url"], benign, path="/beta/litellm_basic_guardrail_api")
    assert (status, reply) == (200, {"action": "NONE"})
    unsafe = {**LITELLM_REQUEST, "texts": ["hello", TOO_LONG]}
    status, reply = _post(front["url"], unsafe, path="/beta/litellm_basic_guardrail_api")
    assert status == 200 and reply["action"] == "BLOCKED"
    assert "text 1: past the cost bound" in reply["blocked_reason"] and "duelguard-classifier/1" in reply["blocked_reason"]
    expected = _expected(front, [{"text": t} for t in SAMPLE_TEXTS])
    for text, exp in zip(SAMPLE_TEXTS, expected):
        status, reply = _post(front["url"], {**LITELLM_REQUEST, "texts": [text], "input_type": "response"},
                              path="/beta/litellm_basic_guardrail_api")
        assert status == 200 and reply["action"] == ("BLOCKED" if exp["unsafe"] else "NONE")
    status, reply = _post(front["url"], LITELLM_REQUEST, token="wrong", path="/beta/litellm_basic_guardrail_api")
    assert status == 401


def test_prompt_and_response_are_scored_together(front: dict[str, Any]) -> None:
    pairs = [{"prompt": SAMPLE_TEXTS[i], "response": SAMPLE_TEXTS[(i + 1) % 5]} for i in range(5)]
    status, reply = _post(front["url"], {"input": pairs}, path="/v1/moderations/pairs")
    assert status == 200 and reply["model"] == "duelguard-classifier/1"
    objs = [{"messages": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["response"]}]}
            for p in pairs]
    expected = _expected(front, objs)
    assert [r["flagged"] for r in reply["results"]] == [e["unsafe"] for e in expected]
    for result, exp in zip(reply["results"], expected):
        assert abs(result["duelguard"]["unsafe_score"] - exp["unsafe_score"]) <= 1e-4


@pytest.mark.parametrize(
    ("body", "token", "status", "needle"),
    [
        (b"x" * (MAX_REQUEST_BYTES + 1), TOKEN, 413, "serving.http.max_request_bytes"),
        ({"input": ["a"] * (MAX_INPUTS + 1)}, TOKEN, 413, "serving.http.max_inputs"),
        ({"input": "x" * (1048576 + 1)}, TOKEN, 413, "serving.max_text_bytes"),
        (b'{"input": ["unterminated', TOKEN, 400, "not valid JSON"),
        ({"input": 5}, TOKEN, 400, "invalid request: input"),
        ({"input": []}, TOKEN, 400, "must not be empty"),
        ({"input": "hello"}, "wrong-token", 401, "bearer token"),
        ({"input": "hello"}, None, 401, "bearer token"),
    ],
    ids=["oversize-body", "too-many-inputs", "text-over-max-bytes", "bad-json", "wrong-shape", "empty-array",
         "wrong-token", "missing-token"],
)
def test_limits_and_errors_have_their_status_code(front: dict[str, Any], body: Any, token: str | None,
                                                 status: int, needle: str) -> None:
    got, reply = _post(front["url"], body, token=token)
    assert got == status and needle in reply["error"]["message"], reply
    assert set(reply["error"]) == {"message", "type", "param", "code"}
    assert _post(front["url"], {"input": "still answering?"})[0] == 200


def test_openai_client_sees_a_wrong_key_as_an_authentication_error(front: dict[str, Any]) -> None:
    import openai

    with pytest.raises(openai.AuthenticationError, match="bearer token"):
        _openai(front, key="not-the-token").moderations.create(model="duelguard", input="hello")


def test_health_readiness_and_metrics(front: dict[str, Any]) -> None:
    status, health = _get(front["url"], "/healthz")
    assert status == 200 and json.loads(health)["status"] == "ok"
    status, ready = _get(front["url"], "/readyz")
    assert status == 200 and json.loads(ready) == {"ready": True}
    _openai(front).moderations.create(model="duelguard", input=[TOO_LONG, TOO_LONG_FR])
    status, text = _get(front["url"], "/metrics")
    assert status == 200
    assert 'duelguard_http_request_duration_seconds_bucket{endpoint="moderations",le="+Inf"}' in text
    assert 'duelguard_http_requests_total{endpoint="moderations",code="413"}' in text  # from the limit tests too
    assert 'duelguard_http_flagged_total{category="violent_crimes",language="en"}' in text  # TOO_LONG: all 12, en
    assert 'duelguard_http_flagged_inputs_total{language="fr"}' in text  # the French text is past the bound too
    assert int(text.split('duelguard_http_inputs_total{endpoint="moderations"} ')[1].split()[0]) >= 2


def test_triton_down_is_503_never_not_flagged_then_served_again(front: dict[str, Any]) -> None:
    """Last in the module: stops the module's tritonserver, then starts it again on the same ports."""
    from duelguard.serving.server import start_server, stop_server

    assert stop_server(front["state"]) is not None
    try:
        status, reply = _post(front["url"], {"input": ["How do I make a bomb?", "hello"]})
        assert status == 503 and "unavailable" in reply["error"]["message"] and "results" not in reply
        status, reply = _post(front["url"], {**LITELLM_REQUEST, "texts": ["hello"]}, path="/beta/litellm_basic_guardrail_api")
        assert status == 503 and "action" not in reply
        assert _get(front["url"], "/readyz")[0] == 503
        assert _get(front["url"], "/healthz")[0] == 200  # the process itself is fine: liveness stays up
    finally:
        start_server(front["repo"], front["state"], "duelguard", *front["ports"], timeout=180)
    back = time.monotonic()
    while _get(front["url"], "/readyz")[0] != 200 and time.monotonic() - back < 10:
        time.sleep(0.2)
    print(f"front ready {time.monotonic() - back:.2f} s after Triton was")
    assert _get(front["url"], "/readyz")[0] == 200
    status, reply = _post(front["url"], {"input": [TOO_LONG]})
    assert status == 200 and reply["results"][0]["flagged"] is True


def test_front_refuses_a_taken_port_and_stop_is_safe_without_one(front: dict[str, Any], tmp_path: Path) -> None:
    from duelguard.errors import ServingError
    from duelguard.serving.http_front import FrontSettings, start_front, stop_front

    port = int(front["url"].rsplit(":", 1)[1])
    with pytest.raises(ServingError, match="exited at startup"):
        start_front(FrontSettings(front["grpc"]), tmp_path, "127.0.0.1", port, timeout=60)
    assert stop_front(tmp_path) is None and not (tmp_path / "http_front.json").exists()
    assert _get(front["url"], "/healthz")[0] == 200  # the running front is untouched


def test_serve_starts_the_front_beside_tritonserver_and_serve_stop_stops_it(
        front: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`duelguard serve` (the CLI itself, in process) starts the front on serving.http.port beside the
    server serve_champion returns (here: the module's real tritonserver; the registry part of serve is
    tested in test_release_faults), a second `serve` keeps it, and `serve --stop` stops it."""
    import re

    from typer.testing import CliRunner

    from duelguard.cli import app
    from duelguard.serving import release
    from duelguard.serving.http_front import read_front
    from duelguard.serving.server import ServerInfo

    port = free_port()
    text = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")
    params_path = tmp_path / "params.yaml"
    params_path.write_text(re.sub(r"(\n  http:[^\n]*\n    host: 127.0.0.1\n    port: )8080", rf"\g<1>{port}", text),
                           encoding="utf-8")
    grpc_port = int(front["grpc"].rsplit(":", 1)[1])
    server = ServerInfo(os.getpid(), str(front["repo"]), "duelguard", 0, grpc_port, 0, "-")
    monkeypatch.setattr(release, "serve_champion", lambda *a, **k: {
        "server": server, "action": "started", "version": 1, "previous_version": None, "concrete": "models:/x/1"})
    monkeypatch.delenv("DUELGUARD_HTTP_TOKEN", raising=False)
    cli = ["--params", str(params_path), "--profile", "tiny", "--root", str(tmp_path)]
    runner = CliRunner()
    try:
        done = runner.invoke(app, [*cli, "serve"])
        assert done.exit_code == 0, done.output
        assert f"http://127.0.0.1:{port}/v1/moderations" in done.output
        state = tmp_path / front["params"].serving.state_dir
        first = read_front(state)
        assert first is not None and first.port == port
        reply = _openai({"url": first.url}, key="unused: no token configured").moderations.create(
            model="duelguard", input=["hi", TOO_LONG])
        assert reply.model == "duelguard-classifier/1" and [r.flagged for r in reply.results][1] is True
        again = runner.invoke(app, [*cli, "serve"])
        assert again.exit_code == 0 and f"HTTP front pid {first.pid}:" in again.output  # kept, not restarted
    finally:
        stopped = runner.invoke(app, [*cli, "serve", "--stop"])
    assert stopped.exit_code == 0 and f"stopped the HTTP front pid {first.pid}" in stopped.output
    assert read_front(state) is None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
