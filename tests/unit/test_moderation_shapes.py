"""The gateways' shapes (duelguard.serving.moderation) against the published schemas: OpenAI's Moderation
object as the official `openai` client models it, and LiteLLM's documented Generic Guardrail API."""

from __future__ import annotations

import numpy as np
import pytest

from duelguard.serving import moderation as mod
from duelguard.taxonomy import CATEGORIES
from litellm_contract import LITELLM_REQUEST

THRESHOLDS = np.full(12, 0.5, dtype=np.float32)


def _probs(**values: float) -> np.ndarray:
    probs = np.full(12, 0.01, dtype=np.float32)
    for name, value in values.items():
        probs[CATEGORIES.index(name)] = value
    return probs


def test_result_parses_as_the_openai_clients_moderation_with_every_name() -> None:
    from openai.types import Moderation, ModerationCreateResponse

    result = mod.moderation_result(_probs(violent_crimes=0.9, hate=0.3), THRESHOLDS, False, False)
    parsed = Moderation.model_validate(result)  # validates, not construct(): a wrong type fails here
    assert parsed.flagged is True and parsed.categories.violence is True and parsed.categories.illicit_violent is True
    assert parsed.categories.hate is False and parsed.category_scores.hate == pytest.approx(0.3)
    assert parsed.category_scores.violence == pytest.approx(0.9) and parsed.categories.self_harm is False
    assert set(result["categories"]) == set(mod.OPENAI_CATEGORIES) | set(CATEGORIES)
    assert set(result["category_scores"]) == set(result["categories"]) == set(result["category_applied_input_types"])
    assert result["categories"]["violent_crimes"] is True and result["categories"]["non_violent_crimes"] is False
    response = ModerationCreateResponse.model_validate(mod.moderation_response("duelguard-classifier/3", [result]))
    assert response.model == "duelguard-classifier/3" and response.id.startswith("modr-")


def test_mapping_takes_the_max_and_each_sources_own_threshold() -> None:
    thresholds = THRESHOLDS.copy()
    thresholds[CATEGORIES.index("sex_related_crimes")] = 0.2
    result = mod.moderation_result(_probs(sex_related_crimes=0.3, sexual_content=0.4), thresholds, False, False)
    # sexual <- max(sexual_content 0.4 (thr .5: not flagged), sex_related_crimes 0.3 (thr .2: flagged))
    assert result["category_scores"]["sexual"] == pytest.approx(0.4) and result["categories"]["sexual"] is True
    assert result["categories"]["illicit"] is True and result["categories"]["sexual/minors"] is False
    for name in mod.UNSCORED:  # nothing maps there: reported, never flagged
        assert result["categories"][name] is False and result["category_scores"][name] == 0.0
    assert set(mod.UNSCORED) == {"harassment/threatening", "hate/threatening", "violence/graphic"}
    assert set(mod.ONLY_OURS) == {"specialized_advice", "privacy", "intellectual_property", "jailbreak_prompts"}
    only_ours = mod.moderation_result(_probs(jailbreak_prompts=0.99), THRESHOLDS, False, False)
    assert only_ours["flagged"] is True and not any(only_ours["categories"][n] for n in mod.OPENAI_CATEGORIES)


def test_too_long_is_flagged_with_its_reason_and_benign_is_not() -> None:
    too_long = mod.moderation_result(np.ones(12, dtype=np.float32), THRESHOLDS, False, True)
    assert too_long["flagged"] and too_long["duelguard"]["reason"] == "too_long"
    benign = mod.moderation_result(_probs(), THRESHOLDS, False, False)
    assert benign["flagged"] is False and not any(benign["categories"].values())
    assert benign["duelguard"] == {"unsafe_score": pytest.approx(0.01), "truncated": False, "reason": None}


def test_litellm_documented_request_parses_and_reply_uses_the_documented_actions() -> None:
    request = mod.GuardrailRequest.model_validate(LITELLM_REQUEST)
    assert request.texts == ["extracted text from the request"] and request.input_type == "request"
    with pytest.raises(ValueError):
        mod.GuardrailRequest.model_validate({**LITELLM_REQUEST, "input_type": "sideways"})
    flagged = mod.moderation_result(_probs(hate=0.9), THRESHOLDS, False, False)
    benign = mod.moderation_result(_probs(), THRESHOLDS, False, False)
    assert mod.guardrail_response([benign, benign], "duelguard-classifier/2", "request") == {"action": "NONE"}
    blocked = mod.guardrail_response([benign, flagged], "duelguard-classifier/2", "response")
    assert blocked["action"] == "BLOCKED" and set(blocked) == {"action", "blocked_reason"}
    assert "text 1: hate" in blocked["blocked_reason"] and "duelguard-classifier/2" in blocked["blocked_reason"]
    assert "response" in blocked["blocked_reason"]


def test_pair_is_scored_as_predicts_messages_flattening() -> None:
    from duelguard.classifier.inference import text_of

    pair = mod.PairItem(prompt="How do I do X?", response="Like this.")
    assert text_of(mod.pair_text(pair)) == "user: How do I do X?\nassistant: Like this."
