"""The gateways' shapes over duelguard's decisions: OpenAI's moderation response and LiteLLM's Generic
Guardrail API (issue 15). Pure functions: no I/O, no model; duelguard.serving.http_front calls them with
the served version's scores and thresholds (so every decision here is the one `duelguard predict` makes).

OpenAI category names (the moderation object of /v1/moderations: harassment, harassment/threatening, hate,
hate/threatening, illicit, illicit/violent, self-harm, self-harm/instructions, self-harm/intent, sexual,
sexual/minors, violence, violence/graphic) are filled from ours by OPENAI_MAP: an OpenAI name's score is the
highest probability among the duelguard categories mapped onto it, and it is flagged when any of those is
past its own calibrated threshold. Names nothing maps onto (UNSCORED) are reported false / 0.0: the
classifier does not score them. Our 12 categories follow under their own names, so nothing is lost
(`hate` is both: the same meaning). `flagged` is `duelguard predict`'s `unsafe`: any category past its
threshold, or the text past the cost bound (`reason: too_long`, every probability 1.0).

LiteLLM's Generic Guardrail API (docs.litellm.ai/docs/adding_provider/generic_guardrail_api): POST
/beta/litellm_basic_guardrail_api with {texts, images?, tools?, request_data, input_type: "request" |
"response", litellm_call_id?, litellm_trace_id?, additional_provider_specific_params}; the reply is
{action: "BLOCKED" | "NONE" | "GUARDRAIL_INTERVENED", blocked_reason (when BLOCKED), texts?, images?}.
We never rewrite text: BLOCKED when any text is flagged, else NONE.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from duelguard.classifier.saved import output_record
from duelguard.taxonomy import CATEGORIES

OPENAI_CATEGORIES: tuple[str, ...] = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)
# OpenAI name -> the duelguard categories whose probabilities it takes (max) and whose thresholds flag it.
OPENAI_MAP: dict[str, tuple[str, ...]] = {
    "harassment": ("hate",),
    "hate": ("hate",),
    "illicit": ("non_violent_crimes", "sex_related_crimes"),
    "illicit/violent": ("violent_crimes", "indiscriminate_weapons"),
    "self-harm": ("suicide_self_harm",),
    "self-harm/instructions": ("suicide_self_harm",),
    "self-harm/intent": ("suicide_self_harm",),
    "sexual": ("sexual_content", "sex_related_crimes", "child_sexual_exploitation"),
    "sexual/minors": ("child_sexual_exploitation",),
    "violence": ("violent_crimes", "indiscriminate_weapons"),
}
UNSCORED: tuple[str, ...] = tuple(name for name in OPENAI_CATEGORIES if name not in OPENAI_MAP)
# duelguard categories no OpenAI name covers: only under their own names.
ONLY_OURS: tuple[str, ...] = tuple(c for c in CATEGORIES if not any(c in v for v in OPENAI_MAP.values()))
ALL_NAMES: tuple[str, ...] = OPENAI_CATEGORIES + tuple(c for c in CATEGORIES if c not in OPENAI_CATEGORIES)


class ModerationRequest(BaseModel):
    """OpenAI's request: `input` a string or a non-empty array of strings; `model` is accepted and ignored
    (the reply names the version that answered)."""

    model_config = ConfigDict(extra="ignore")
    input: str | list[str]
    model: str | None = None


class PairItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str
    response: str


class PairModerationRequest(BaseModel):
    """Response moderation: each item a prompt and the model's response, scored together."""

    model_config = ConfigDict(extra="ignore")
    input: list[PairItem]
    model: str | None = None


class GuardrailRequest(BaseModel):
    """LiteLLM's documented Generic Guardrail API request (unknown fields ignored: the API is beta)."""

    model_config = ConfigDict(extra="ignore")
    texts: list[str] = []
    images: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    request_data: dict[str, Any] = {}
    input_type: Literal["request", "response"] = "request"
    litellm_call_id: str | None = None
    litellm_trace_id: str | None = None
    additional_provider_specific_params: dict[str, Any] = {}


def pair_text(item: PairItem) -> dict[str, Any]:
    """The input object scored for a prompt + response pair: `messages`, flattened by `predict`'s own
    text_of into "user: ...\\nassistant: ..." lines."""
    return {"messages": [{"role": "user", "content": item.prompt}, {"role": "assistant", "content": item.response}]}


def moderation_result(probs: np.ndarray, thresholds: np.ndarray, truncated: bool, too_long: bool) -> dict[str, Any]:
    """One `results[]` entry: flagged, categories, category_scores (OpenAI's names, then ours),
    category_applied_input_types, and `duelguard` (unsafe_score, truncated, reason as in `predict`)."""
    record = output_record({}, probs, thresholds, truncated, too_long)
    probs = np.asarray(probs, dtype=np.float32)
    ours_flag = {name: bool(too_long or p > t) for name, p, t in zip(CATEGORIES, probs, thresholds)}
    ours_score = record["categories"]
    categories: dict[str, bool] = {}
    scores: dict[str, float] = {}
    for name in OPENAI_CATEGORIES:
        sources = OPENAI_MAP.get(name, ())
        categories[name] = any(ours_flag[s] for s in sources)
        scores[name] = max((ours_score[s] for s in sources), default=0.0)
    for name in CATEGORIES:
        categories[name] = ours_flag[name]
        scores[name] = ours_score[name]
    return {
        "flagged": record["unsafe"],
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": {name: ["text"] for name in ALL_NAMES},
        "duelguard": {"unsafe_score": record["unsafe_score"], "truncated": record["truncated"],
                      "reason": record["reason"]},
    }


def moderation_response(model: str, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"id": f"modr-{uuid.uuid4().hex}", "model": model, "results": list(results)}


def flagged_categories(result: dict[str, Any]) -> list[str]:
    """Our own category names flagged in a moderation result (taxonomy order)."""
    return [name for name in CATEGORIES if result["categories"][name]]


def guardrail_response(results: Sequence[dict[str, Any]], model: str, input_type: str) -> dict[str, Any]:
    """LiteLLM's reply: BLOCKED (with blocked_reason naming the texts and categories) or NONE."""
    blocked = [(i, r) for i, r in enumerate(results) if r["flagged"]]
    if not blocked:
        return {"action": "NONE"}
    parts = []
    for i, r in blocked:
        why = "past the cost bound (too_long)" if r["duelguard"]["reason"] else ", ".join(flagged_categories(r))
        parts.append(f"text {i}: {why}")
    return {"action": "BLOCKED",
            "blocked_reason": f"duelguard {model} flagged the {input_type}: " + "; ".join(parts)}


def error_body(message: str, kind: str, code: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object, which its client reads into the raised exception's message."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
