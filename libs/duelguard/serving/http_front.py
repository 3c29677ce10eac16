"""The HTTP front over the served champion (issue 15): the gateways' APIs, inference stays in Triton.

A thin FastAPI app: every score comes from Triton over gRPC through GuardServingClient (the same client
as `duelguard classify`: the served version's thresholds, read from its config and checked against the
version that answered), shaped by duelguard.serving.moderation.

    POST /v1/moderations                  OpenAI's moderation API (`input`: string or array of strings)
    POST /v1/moderations/pairs            response moderation: {input: [{prompt, response}]} scored together
    POST /beta/litellm_basic_guardrail_api  LiteLLM's Generic Guardrail API (BLOCKED / NONE)
    GET  /healthz                         the process answers
    GET  /readyz                          200 only while Triton has the model READY, else 503
    GET  /metrics                         Prometheus text format

Errors are OpenAI's error object ({"error": {message, type, param, code}}), never a silent "not flagged":
Triton unreachable or the model not loaded -> 503; body past serving.http.max_request_bytes, more inputs than
serving.http.max_inputs, or one text past serving.max_text_bytes -> 413 naming the limit; bad JSON or a
wrong shape -> 400; a configured bearer token (the variable serving.http.token_env) missing or wrong -> 401.

Metrics: requests by endpoint and status, a latency histogram per endpoint, inputs scored, and flagged
inputs per category and language. The language is detected (py3langid, first 1,000 characters) only for
flagged inputs, so benign traffic pays nothing for it; languages outside en/fr/es/de count as `other`, and
`unknown` when py3langid is not installed (the serving image without the loop extra).
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request

from duelguard.errors import ServingError
from duelguard.fsio import DataError, atomic_write_json
from duelguard.serving import moderation as mod

STATE_FILE = "http_front.json"
LOG_FILE = "http_front.log"
INSTANCE_ENV = "DUELGUARD_HTTP_FRONT_INSTANCE"  # a random id: start_front tells its own process from another on the port
LANGUAGES = ("en", "fr", "es", "de")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class FrontSettings:
    grpc_url: str
    model_name: str = "duelguard"
    registered_model: str = "duelguard-classifier"
    max_request_bytes: int = 4194304
    max_inputs: int = 256
    max_text_bytes: int = 1048576
    token: str | None = None
    triton_timeout_s: float = 120.0


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error",
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.kind, self.param = status, message, code, kind, param


class Metrics:
    """Counters and a histogram in Prometheus' text format (no client library needed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, list[float]] = {}  # endpoint -> [bucket counts..., sum, count]
        self.inputs: dict[str, int] = {}
        self.flagged_inputs: dict[str, int] = {}  # language -> count
        self.flagged: dict[tuple[str, str], int] = {}  # (category, language) -> count

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1
            row = self.latency.setdefault(endpoint, [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    row[i] += 1
            row[-2] += seconds
            row[-1] += 1

    def scored(self, endpoint: str, n: int, flagged: list[tuple[str, list[str]]]) -> None:
        with self._lock:
            self.inputs[endpoint] = self.inputs.get(endpoint, 0) + n
            for language, categories in flagged:
                self.flagged_inputs[language] = self.flagged_inputs.get(language, 0) + 1
                for category in categories:
                    self.flagged[(category, language)] = self.flagged.get((category, language), 0) + 1

    def render(self) -> str:
        out = ["# HELP duelguard_http_requests_total HTTP requests by endpoint and status code.",
               "# TYPE duelguard_http_requests_total counter"]
        with self._lock:
            for (endpoint, status), n in sorted(self.requests.items()):
                out.append(f'duelguard_http_requests_total{{endpoint="{endpoint}",code="{status}"}} {n}')
            out += ["# HELP duelguard_http_request_duration_seconds Request latency by endpoint.",
                    "# TYPE duelguard_http_request_duration_seconds histogram"]
            for endpoint, row in sorted(self.latency.items()):
                for bound, n in zip(BUCKETS, row):
                    out.append(f'duelguard_http_request_duration_seconds_bucket{{endpoint="{endpoint}",le="{bound}"}} {int(n)}')
                out.append(f'duelguard_http_request_duration_seconds_bucket{{endpoint="{endpoint}",le="+Inf"}} {int(row[-1])}')
                out.append(f'duelguard_http_request_duration_seconds_sum{{endpoint="{endpoint}"}} {row[-2]:.6f}')
                out.append(f'duelguard_http_request_duration_seconds_count{{endpoint="{endpoint}"}} {int(row[-1])}')
            out += ["# HELP duelguard_http_inputs_total Texts scored, by endpoint.",
                    "# TYPE duelguard_http_inputs_total counter"]
            for endpoint, n in sorted(self.inputs.items()):
                out.append(f'duelguard_http_inputs_total{{endpoint="{endpoint}"}} {n}')
            out += ["# HELP duelguard_http_flagged_inputs_total Flagged texts by detected language.",
                    "# TYPE duelguard_http_flagged_inputs_total counter"]
            for language, n in sorted(self.flagged_inputs.items()):
                out.append(f'duelguard_http_flagged_inputs_total{{language="{language}"}} {n}')
            out += ["# HELP duelguard_http_flagged_total Flagged texts by category and detected language.",
                    "# TYPE duelguard_http_flagged_total counter"]
            for (category, language), n in sorted(self.flagged.items()):
                out.append(f'duelguard_http_flagged_total{{category="{category}",language="{language}"}} {n}')
        return "\n".join(out) + "\n"


_LANGID: Any = None


def detect_language(text: str) -> str:
    """en/fr/es/de, `other`, or `unknown` (py3langid missing): the metrics' language label."""
    global _LANGID
    if _LANGID is None:
        try:
            import py3langid

            _LANGID = py3langid
        except ImportError:
            _LANGID = False
    if _LANGID is False or not text.strip():
        return "unknown"
    code = _LANGID.classify(text[:1000])[0]
    return code if code in LANGUAGES else "other"


def create_app(settings: FrontSettings, client: Any = None) -> Any:
    """The FastAPI app; `client` (a GuardServingClient) is made from settings.grpc_url when not given."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse
    from pydantic import ValidationError
    from starlette.concurrency import run_in_threadpool

    from duelguard.serving.client import GuardServingClient

    if client is None:  # few, quick retries: a down Triton must become a 503 within a second, not minutes
        client = GuardServingClient(settings.grpc_url, settings.model_name, retries=2, backoff_s=0.1,
                                    timeout_s=settings.triton_timeout_s)
        # gRPC's default reconnect backoff grows to 120 s: after a Triton restart the front would keep
        # answering 503 for up to two minutes. Capped at 1 s here (message limits as tritonclient's defaults).
        import tritonclient.grpc as grpcclient

        client._client.close()
        client._client = grpcclient.InferenceServerClient(settings.grpc_url, channel_args=[
            ("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1),
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000)])
    app = FastAPI(title="duelguard", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics()
    app.state.client, app.state.metrics, app.state.settings = client, metrics, settings

    def fail(error: HttpError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse(mod.error_body(error.message, error.kind, error.code, error.param),
                            status_code=error.status, headers=headers)

    def check_token(request: Request) -> None:
        if settings.token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), settings.token.encode()):
            raise HttpError(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                            "invalid_api_key", "authentication_error")

    async def read_json(request: Request) -> Any:
        limit = settings.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HttpError(413, f"request body of {declared} bytes is over serving.http.max_request_bytes "
                                 f"({limit})", "request_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HttpError(413, f"request body is over serving.http.max_request_bytes ({limit})",
                                "request_too_large")
        try:
            return json.loads(bytes(body))
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}", "invalid_json") from None

    def parse(model: type, payload: Any) -> Any:
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or None
            raise HttpError(400, f"invalid request: {where}: {first.get('msg')}", "invalid_request", param=where) from None

    def check_texts(texts: list[str], field: str) -> None:
        if not texts:
            raise HttpError(400, f"`{field}` must not be empty", "empty_input", param=field)
        if len(texts) > settings.max_inputs:
            raise HttpError(413, f"{len(texts)} inputs is over serving.http.max_inputs ({settings.max_inputs})",
                            "too_many_inputs", param=field)
        for i, text in enumerate(texts):
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError as exc:
                raise HttpError(400, f"{field}[{i}] cannot be encoded as UTF-8 ({exc.reason})", "invalid_text",
                                param=field) from None
            if size > settings.max_text_bytes:
                raise HttpError(413, f"{field}[{i}] is {size} bytes, over serving.max_text_bytes "
                                     f"({settings.max_text_bytes})", "text_too_large", param=field)

    def score(objs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str], str]:
        """Moderation results for `objs` (text or messages) and the `model` string naming the served version."""
        from duelguard.classifier.inference import text_of

        texts = [text_of(obj, f"input {i}") for i, obj in enumerate(objs)]
        scores, thresholds = client.score_versioned(texts)
        version = client.served_version()
        results = [mod.moderation_result(p, thresholds, bool(t), bool(x))
                   for p, t, x in zip(scores.probs, scores.truncated, scores.too_long)]
        return results, texts, f"{settings.registered_model}/{version}" if version else settings.registered_model

    async def scored(endpoint: str, objs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
        try:
            results, texts, model = await run_in_threadpool(score, objs)
        except ServingError as exc:
            raise HttpError(503, f"the guard model is unavailable: {exc}", "model_unavailable", "server_error") from None
        except DataError as exc:
            raise HttpError(400, str(exc), "invalid_text") from None
        flagged = [(detect_language(t), mod.flagged_categories(r)) for t, r in zip(texts, results) if r["flagged"]]
        metrics.scored(endpoint, len(objs), flagged)
        return results, model

    def timed(endpoint: str, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def run(request: Request) -> Any:
            started = time.perf_counter()
            try:
                check_token(request)
                response = JSONResponse(await handler(request))
            except HttpError as error:
                response = fail(error)
            metrics.observe(endpoint, response.status_code, time.perf_counter() - started)
            return response
        return run

    async def moderations(request: Request) -> dict[str, Any]:
        body = parse(mod.ModerationRequest, await read_json(request))
        texts = [body.input] if isinstance(body.input, str) else body.input
        check_texts(texts, "input")
        results, model = await scored("moderations", [{"text": t} for t in texts])
        return mod.moderation_response(model, results)

    async def pairs(request: Request) -> dict[str, Any]:
        body = parse(mod.PairModerationRequest, await read_json(request))
        check_texts([f"user: {p.prompt}\nassistant: {p.response}" for p in body.input], "input")
        results, model = await scored("pairs", [mod.pair_text(p) for p in body.input])
        return mod.moderation_response(model, results)

    async def litellm(request: Request) -> dict[str, Any]:
        body = parse(mod.GuardrailRequest, await read_json(request))
        if not body.texts:
            return {"action": "NONE"}  # nothing to check (e.g. an image-only request): nothing to block
        check_texts(body.texts, "texts")
        results, model = await scored("litellm", [{"text": t} for t in body.texts])
        return mod.guardrail_response(results, model, body.input_type)

    app.add_api_route("/v1/moderations", timed("moderations", moderations), methods=["POST"])
    app.add_api_route("/v1/moderations/pairs", timed("pairs", pairs), methods=["POST"])
    app.add_api_route("/beta/litellm_basic_guardrail_api", timed("litellm", litellm), methods=["POST"])

    instance = os.environ.get(INSTANCE_ENV, "")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "instance": instance}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        try:
            ready = bool(client._client.is_model_ready(settings.model_name, client_timeout=2.0))
        except Exception as exc:  # noqa: BLE001 - unreachable, refused, timed out: all "not ready"
            return JSONResponse({"ready": False, "reason": f"Triton at {settings.grpc_url}: {exc}"}, status_code=503)
        if not ready:
            return JSONResponse({"ready": False, "reason": f"model {settings.model_name!r} is not READY on Triton"},
                                status_code=503)
        return JSONResponse({"ready": True})

    @app.get("/metrics")
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return app


# ---- process management (`duelguard serve` starts it beside tritonserver) ------------------------------
@dataclass(frozen=True)
class FrontInfo:
    pid: int
    host: str
    port: int
    grpc_url: str
    log: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def settings_from(params: Any, grpc_url: str) -> FrontSettings:
    http = params.serving.http
    token = os.environ.get(http.token_env) or None
    return FrontSettings(grpc_url, params.serving.model_name, params.tracking.registered_model,
                         http.max_request_bytes, http.max_inputs, params.serving.max_text_bytes, token)


def _is_front(pid: int) -> bool:
    try:
        return b"duelguard.serving.http_front" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def start_front(settings: FrontSettings, state_dir: Path, host: str, port: int, timeout: float = 60.0) -> FrontInfo:
    """Start the front in the background (its own session, like tritonserver) and wait for /healthz.
    The token travels in the environment variable DUELGUARD_HTTP_TOKEN of the child, never on argv."""
    import urllib.request

    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    stop_front(state_dir)
    log = state_dir / LOG_FILE
    command = [sys.executable, "-m", "duelguard.serving.http_front", "--grpc-url", settings.grpc_url,
               "--host", host, "--port", str(port), "--model-name", settings.model_name,
               "--registered-model", settings.registered_model, "--max-request-bytes", str(settings.max_request_bytes),
               "--max-inputs", str(settings.max_inputs), "--max-text-bytes", str(settings.max_text_bytes)]
    import uuid

    instance = uuid.uuid4().hex
    env = dict(os.environ)
    env[INSTANCE_ENV] = instance
    env.pop("DUELGUARD_HTTP_TOKEN", None)
    if settings.token:
        env["DUELGUARD_HTTP_TOKEN"] = settings.token
    with log.open("ab") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    info = FrontInfo(process.pid, host, port, settings.grpc_url, str(log))
    atomic_write_json(state_dir / STATE_FILE, asdict(info))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stop_front(state_dir)
            tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise ServingError(f"the HTTP front exited at startup (port {port} taken?); log {log}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{info.url}/healthz", timeout=1.0) as reply:
                if json.loads(reply.read()).get("instance") == instance:
                    return info
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    stop_front(state_dir)
    raise ServingError(f"the HTTP front did not answer on {info.url} within {timeout:.0f}s; log {log}")


def read_front(state_dir: Path) -> FrontInfo | None:
    path = Path(state_dir) / STATE_FILE
    if not path.exists():
        return None
    info = FrontInfo(**json.loads(path.read_text(encoding="utf-8")))
    return info if _is_front(info.pid) else None


def stop_front(state_dir: Path, timeout: float = 15.0) -> FrontInfo | None:
    """Stop the recorded front (SIGTERM, then SIGKILL); a PID now running another program is not signalled."""
    path = Path(state_dir).resolve() / STATE_FILE
    info = read_front(path.parent)
    if info is None:
        path.unlink(missing_ok=True)
        return None
    os.killpg(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_front(info.pid) and time.monotonic() < deadline:
        try:
            os.waitpid(info.pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _is_front(info.pid):
        os.killpg(info.pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return info


def main(argv: list[str] | None = None) -> None:
    """`python -m duelguard.serving.http_front --grpc-url HOST:PORT [--host H] [--port P] ...` (the bearer
    token, if any, from $DUELGUARD_HTTP_TOKEN)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--model-name", default="duelguard")
    parser.add_argument("--registered-model", default="duelguard-classifier")
    parser.add_argument("--max-request-bytes", type=int, default=4194304)
    parser.add_argument("--max-inputs", type=int, default=256)
    parser.add_argument("--max-text-bytes", type=int, default=1048576)
    parser.add_argument("--token-env", default="DUELGUARD_HTTP_TOKEN")
    args = parser.parse_args(argv)
    settings = FrontSettings(args.grpc_url, args.model_name, args.registered_model, args.max_request_bytes,
                             args.max_inputs, args.max_text_bytes, os.environ.get(args.token_env) or None)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
