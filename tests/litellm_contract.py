"""LiteLLM's Generic Guardrail API request as its documentation gives it, for the contract tests."""

from __future__ import annotations

# The request of docs.litellm.ai/docs/adding_provider/generic_guardrail_api ("Request Format"), verbatim
# apart from its comments, plus structured_messages, which LiteLLM's implementation also sends.
LITELLM_REQUEST = {
    "texts": ["extracted text from the request"],
    "images": ["base64_encoded_image_data"],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather",
                                                "parameters": {"type": "object",
                                                               "properties": {"location": {"type": "string"}}}}}],
    "request_data": {"user_api_key_hash": "hash", "user_api_key_alias": "alias", "user_api_key_user_id": "u",
                     "user_api_key_user_email": "e", "user_api_key_team_id": "t", "user_api_key_team_alias": "ta",
                     "user_api_key_end_user_id": "eu", "user_api_key_org_id": "o"},
    "input_type": "request",
    "litellm_call_id": "unique_call_id",
    "litellm_trace_id": "trace_id",
    "additional_provider_specific_params": {},
    "structured_messages": [{"role": "user", "content": "extracted text from the request"}],
}
