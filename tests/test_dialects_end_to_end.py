"""The dialects through every layer, both architectures: the official `openai` SDK (responses.create /
responses.stream, completions.create), the official `anthropic` SDK (messages.create / messages.stream) and the
OpenAI Agents SDK → the coordinator → the link → a real agent running the MLX engine on the tiny models.

As in test_tools_end_to_end.py, a test-only logits processor makes the random-weight model write a given text
in its own format (a call, reasoning, an answer), with tool_choice auto (a forced text and the grammar of
tool_choice required would fight over the JSON's spaces); everything after the logits is the real path. The
Agents SDK test forces nothing: `tool_choice` required makes the engine's grammar write the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Literal

import anthropic
import httpx
import openai
import pytest

from agent.link.client import Link
from tests.provider_support import coordinator, eventually
from tests.test_tools_end_to_end import CALL, SLOW_CPU, ScriptedOutputs, serve

ANSWER = {  # reasoning, then the answer, in each model's own format
    "gpt-oss-tiny": ("<|channel|>analysis<|message|>Hmm.<|end|><|start|>assistant<|channel|>final<|message|>"
                     "Sunny in Paris.<|return|>"),
    "gemma-4-tiny": "<|channel>thought\nHmm.<channel|>Sunny in Paris.<turn|>",
}
REASONS_BEFORE_CALL = {"gpt-oss-tiny": "Need weather.", "gemma-4-tiny": None}  # CALL's analysis, if any
TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
QUESTION = "Weather in Paris?"


class Recorded(ScriptedOutputs):
    """ScriptedOutputs that also keeps every request and cancel; with no script left, or a None script, the model
    writes freely."""

    def __init__(self, scripted: ScriptedOutputs) -> None:
        super().__init__(scripted.engine, scripted.model)
        self.requests, self.cancelled = [], []

    async def submit(self, request):
        self.requests.append(request)
        if self.scripts and self.scripts[0] is None:
            self.scripts.pop(0)
        elif self.scripts:
            return await super().submit(request)
        return await self.engine.submit(request)

    async def cancel(self, request_id: str) -> bool:
        self.cancelled.append(request_id)
        return await self.engine.cancel(request_id)


@contextlib.asynccontextmanager
async def agent_and_coordinator(tiny_models_dir, name: str):
    engine, scripted, handler = await serve(name, tiny_models_dir / name)
    recorded = handler.engine = Recorded(scripted)
    async with coordinator(SLOW_CPU) as server:
        link = Link(server.ws_url, "any-token", handler)
        task = asyncio.create_task(link.run())
        try:
            await eventually(lambda: server.coordinator.router.registry.offers(name), timeout=20, what="the agent")
            yield server, recorded
        finally:
            link.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await engine.stop()


def text_of(request) -> str:
    return " ".join(str(message.get("content") or "") for message in request.messages)


@pytest.mark.parametrize("name", ["gpt-oss-tiny", "gemma-4-tiny"])
async def test_openai_responses_a_call_created_and_streamed_then_its_output_answered_with_reasoning(
        tiny_models_dir, name):
    async with agent_and_coordinator(tiny_models_dir, name) as (server, recorded):
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
        ask = dict(model=name, tools=[TOOL], tool_choice="auto", max_output_tokens=80, temperature=0)
        recorded.scripts += [CALL[name], CALL[name], ANSWER[name]]

        first = await client.responses.create(input=QUESTION, **ask)
        (call,) = [item for item in first.output if item.type == "function_call"]
        assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
        reasoning = [item.content[0].text for item in first.output if item.type == "reasoning"]
        assert reasoning == ([REASONS_BEFORE_CALL[name]] if REASONS_BEFORE_CALL[name] else [])
        assert first.status == "completed" and first.usage.output_tokens == recorded.num_forced[0]

        async with client.responses.stream(input=QUESTION, **ask) as stream:
            kinds = [event.type async for event in stream]
            streamed = await stream.get_final_response()
        assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
        assert [json.loads(i.arguments) for i in streamed.output if i.type == "function_call"] == [{"city": "Paris"}]

        history = [{"role": "user", "content": QUESTION}, *[item.model_dump(exclude_none=True) for item in first.output],
                   {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24 C"}]
        answer = await client.responses.create(input=history, **ask)
        assert answer.output_text == "Sunny in Paris." and answer.status == "completed"
        assert [item.content[0].text for item in answer.output if item.type == "reasoning"] == ["Hmm."]
        assert "sunny, 24 C" in text_of(recorded.requests[-1])  # the result reached the model's prompt
        assert answer.usage.input_tokens > first.usage.input_tokens


@pytest.mark.parametrize("name", ["gpt-oss-tiny", "gemma-4-tiny"])
async def test_anthropic_messages_a_tool_use_created_and_streamed_then_its_result_answered_with_thinking(
        tiny_models_dir, name):
    async with agent_and_coordinator(tiny_models_dir, name) as (server, recorded):
        client = anthropic.AsyncAnthropic(base_url=server.base_url, api_key="local", max_retries=0)
        ask = dict(model=name, max_tokens=80, tool_choice={"type": "auto"},
                   tools=[{"name": "get_weather", "description": TOOL["description"], "input_schema": TOOL["parameters"]}])
        question = {"role": "user", "content": QUESTION}
        recorded.scripts += [CALL[name], CALL[name], ANSWER[name]]

        first = await client.messages.create(messages=[question], **ask)
        (use,) = [block for block in first.content if block.type == "tool_use"]
        assert use.name == "get_weather" and use.input == {"city": "Paris"} and first.stop_reason == "tool_use"
        assert first.usage.output_tokens == recorded.num_forced[0] and first.usage.input_tokens > 0

        async with client.messages.stream(messages=[question], **ask) as stream:
            kinds = [event.type async for event in stream]
            streamed = await stream.get_final_message()
        assert kinds[0] == "message_start" and "input_json" in kinds and streamed.stop_reason == "tool_use"
        assert [b.input for b in streamed.content if b.type == "tool_use"] == [{"city": "Paris"}]

        history = [question, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 24 C"}]}]
        async with client.messages.stream(messages=history, **ask,
                                          thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
            answer = await stream.get_final_message()
        assert [(b.type, getattr(b, "text", None) or getattr(b, "thinking", None)) for b in answer.content] == [
            ("thinking", "Hmm."), ("text", "Sunny in Paris.")]
        assert answer.stop_reason == "end_turn" and answer.usage.input_tokens > first.usage.input_tokens
        assert "sunny, 24 C" in text_of(recorded.requests[-1])


@pytest.mark.parametrize("name", ["gpt-oss-tiny", "gemma-4-tiny"])
async def test_legacy_completions_tokenize_the_prompt_without_the_chat_template(tiny_models_dir, name):
    async with agent_and_coordinator(tiny_models_dir, name) as (server, recorded):
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
        tokenizer = recorded.engine.backend.chat_format(name).tokenizer
        prompt = "The capital of France is"
        recorded.scripts.append(" Paris.")
        forced = len(tokenizer.encode(" Paris.", add_special_tokens=False))
        raw = await client.completions.create(model=name, prompt=prompt, max_tokens=forced, temperature=0, logprobs=2)
        assert raw.choices[0].text == " Paris." and raw.choices[0].finish_reason == "length"
        logprobs = raw.choices[0].logprobs
        assert "".join(logprobs.tokens) == " Paris." and len(logprobs.tokens) == forced
        # {token: logprob}: two alternatives that decode alike share one key, as in OpenAI's own legacy shape
        assert all(1 <= len(alternatives) <= 2 for alternatives in logprobs.top_logprobs)
        assert all(lp <= 0 for lp in logprobs.token_logprobs) and logprobs.text_offset[0] == 0
        assert raw.usage.prompt_tokens == len(tokenizer.encode(prompt))  # the text alone, no template around it
        chat = await client.chat.completions.create(model=name, messages=[{"role": "user", "content": prompt}],
                                                    max_tokens=1)
        assert chat.usage.prompt_tokens > raw.usage.prompt_tokens


STREAMS = {
    "/v1/responses": lambda name: ({"model": name, "input": "Hi", "stream": True, "max_output_tokens": 400},
                                   {"Authorization": "Bearer local"}),
    "/v1/messages": lambda name: ({"model": name, "max_tokens": 400, "stream": True,
                                   "messages": [{"role": "user", "content": "Hi"}]}, {"x-api-key": "local"}),
    "/v1/completions": lambda name: ({"model": name, "prompt": "Hi", "max_tokens": 400, "stream": True},
                                     {"Authorization": "Bearer local"}),
}


@pytest.mark.parametrize("name", ["gpt-oss-tiny", "gemma-4-tiny"])
async def test_a_client_leaving_any_dialects_stream_cancels_at_the_agent_and_releases_the_hold(tiny_models_dir, name):
    async with agent_and_coordinator(tiny_models_dir, name) as (server, recorded):
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30.0) as http:
            for path, request in STREAMS.items():
                body, headers = request(name)
                recorded.scripts.append("x" * 400)  # text at once, whatever the model's channels
                async with http.stream("POST", path, json=body, headers=headers) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if '"delta"' in line or '"text":"x' in line:
                            break  # the first token in, then leave
                request_id = recorded.requests[-1].request_id
                await eventually(lambda: request_id in recorded.cancelled, timeout=10, what=f"{path}'s cancel")
                await eventually(lambda: server.coordinator.accounts.num_holds == 0, timeout=10)


@pytest.mark.parametrize("name", ["gpt-oss-tiny", "gemma-4-tiny"])
async def test_the_openai_agents_sdk_runs_an_agent_whose_required_tool_is_called_and_answered(tiny_models_dir, name):
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # no tracing upload: nothing leaves the machine
    calls: list[str] = []

    @function_tool
    def get_weather(city: Literal["Paris", "Rome"]) -> str:  # an enum: random weights finish the call quickly
        """The weather in a city."""
        calls.append(city)
        return "sunny, 24 C"

    async with agent_and_coordinator(tiny_models_dir, name) as (server, recorded):
        # The call is the grammar's (nothing forced); the answer to its result is scripted, so the turn ends
        # before max_tokens (the SDK takes an incomplete response for an error, as it should).
        recorded.scripts += [None, ANSWER[name]]
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
        agent = Agent(name="weather", instructions="Answer with the weather.", tools=[get_weather],
                      model=OpenAIResponsesModel(model=name, openai_client=client),
                      model_settings=ModelSettings(tool_choice="required", max_tokens=120, temperature=0))
        result = await Runner.run(agent, QUESTION, max_turns=4)
        assert len(calls) == 1 and calls[0] in ("Paris", "Rome")  # the grammar made the call; the SDK ran the tool
        assert result.final_output == "Sunny in Paris."
        assert "sunny, 24 C" in text_of(recorded.requests[1])  # its result reached the model in the next turn
        assert recorded.requests[0].tool_choice == "required" and len(recorded.requests) == 2

        recorded.scripts += [None, ANSWER[name]]  # the same run, streamed (responses.stream under the SDK)
        streamed = Runner.run_streamed(agent, QUESTION, max_turns=4)
        raw = {event.data.type async for event in streamed.stream_events() if event.type == "raw_response_event"}
        assert len(calls) == 2 and streamed.final_output == "Sunny in Paris."
        assert {"response.function_call_arguments.delta", "response.output_text.delta"} <= raw  # our SSE events
        assert "sunny, 24 C" in text_of(recorded.requests[3])


@pytest.mark.parametrize("name", ["gpt-oss-tiny", "gemma-4-tiny"])
async def test_responses_parse_with_a_text_format_returns_a_valid_instance_from_random_weights(tiny_models_dir, name):
    from tests.test_structured_outputs_e2e import Weather  # bounded fields: random weights finish the object

    async with agent_and_coordinator(tiny_models_dir, name) as (server, recorded):
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
        parsed = await client.responses.parse(model=name, input="What is the weather?", text_format=Weather,
                                              max_output_tokens=192, temperature=1.0)
        assert parsed.status == "completed" and isinstance(parsed.output_parsed, Weather)
        assert recorded.requests[0].constraint is not None  # enforced by the engine's grammar, not by luck


@pytest.mark.parametrize("name", ["gpt-oss-tiny", "gemma-4-tiny"])
async def test_responses_text_logprobs_cover_the_answer_streamed_and_not(tiny_models_dir, name):
    async with agent_and_coordinator(tiny_models_dir, name) as (server, recorded):
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
        ask = dict(model=name, input=QUESTION, include=["message.output_text.logprobs"], top_logprobs=2,
                   max_output_tokens=80)
        recorded.scripts += [ANSWER[name], ANSWER[name]]
        whole = await client.responses.create(**ask)
        (text,) = [item.content[0] for item in whole.output if item.type == "message"]
        assert "".join(entry.token for entry in text.logprobs) == text.text == "Sunny in Paris."
        assert all(len(entry.top_logprobs) == 2 and entry.logprob <= 0 for entry in text.logprobs)
        async with client.responses.stream(**ask) as stream:
            deltas = [event for event in [e async for e in stream] if event.type == "response.output_text.delta"]
        assert [entry.token for d in deltas for entry in d.logprobs] == [entry.token for entry in text.logprobs]
