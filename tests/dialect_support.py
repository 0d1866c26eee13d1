"""What the dialect tests share: scripted outputs (reasoning, an answer, a call), the tools in each dialect's
shape, SDK clients, a streamed request body per dialect, and a translation's check by the wire's model."""

from __future__ import annotations

import anthropic
import openai

from agent.wire.chat_body import ChatCompletionBody
from agent.wire.frames import ChunkDelta, ToolCallDelta, UsageReport
from agent.wire.protocol import validate_chat_request
from tests.provider_support import GPT

THINK_THEN_ANSWER = [("", "Let me think."), "Sunny", " in Paris."]
CALL = [("", "Need weather."), ChunkDelta(tool_calls=(ToolCallDelta(index=0, id="call_abc", name="get_weather"),)),
        ChunkDelta(tool_calls=(ToolCallDelta(index=0, arguments='{"city": '),)),
        ChunkDelta(tool_calls=(ToolCallDelta(index=0, arguments='"Paris"}'),))]
RESPONSES_TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
ANTHROPIC_TOOL = {"name": "get_weather", "description": "The weather in a city",
                  "input_schema": RESPONSES_TOOL["parameters"]}
BAD_CALLS = [ChunkDelta(tool_calls=(ToolCallDelta(index=0, id="call_a", name="get_weather"),)),
             ChunkDelta(tool_calls=(ToolCallDelta(index=3, arguments="{}"),))]  # index 3 before 1 and 2


STREAMS = {
    "/v1/responses": ({"model": GPT.id, "input": "Hi", "stream": True}, {"Authorization": "Bearer local"}),
    "/v1/messages": ({"model": GPT.id, "max_tokens": 500, "stream": True,
                      "messages": [{"role": "user", "content": "Hi"}]},
                     {"x-api-key": "local", "anthropic-version": "2023-06-01"}),
    "/v1/completions": ({"model": GPT.id, "prompt": "Hi", "max_tokens": 500, "stream": True},
                        {"Authorization": "Bearer local"}),
}


def openai_client(server, key: str = "local") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)


def anthropic_client(server, key: str = "local") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.base_url, api_key=key, max_retries=0)


USAGE = UsageReport(prompt_tokens=7, completion_tokens=5)


def chat(translated: dict) -> ChatCompletionBody:
    """A translation checked by the wire's own model, as the coordinator checks it."""
    body = validate_chat_request(translated)
    assert isinstance(body, ChatCompletionBody), body
    return body
