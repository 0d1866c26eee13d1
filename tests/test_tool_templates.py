"""The tiny models' chat templates render tools, calls and tool results as the real templates do, so the
engine's tests run the real path.

The expected texts are pinned. The harmony one was compared, character for character, with gpt-oss's own
template (HF openai/gpt-oss-20b chat_template.jinja) on the same messages; the gemma one follows gemma-4's
own template (HF google/gemma-4 chat_template.jinja) and contains a rendering another project checked
against transformers (`GEMMA_GOLDEN`)."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast

from agent.engine.chat_messages import offered_tools, template_messages
from agent.engine.types import GenerationRequest
from agent.testing.tiny_tokenizer import TOKENIZER_SPECS, build_tokenizer

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string", "description": "The city"}, "unit": {"type": "string", "enum": ["c", "f"]}}}}}]
TWO_CALLS_ANSWERED = [  # one assistant turn with two calls; the results come back in the other order
    {"role": "user", "content": "Paris and Rome?"},
    {"role": "assistant", "content": "", "reasoning": "Two cities.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
    {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
]
HARMONY = (
    '<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n'
    'Knowledge cutoff: 2024-06\n\nReasoning: medium\n'
    '\n# Valid channels: analysis, commentary, final. Channel must be included for every message.\n'
    "Calls to these tools must go to the commentary channel: 'functions'.<|end|><|start|>developer<|message|"
    '># Tools\n\n## functions\n\nnamespace functions {\n'
    '\n// The weather in a city\ntype get_weather = (_: {\n'
    '// The city\ncity: string,\nunit?: "c" | "f",\n'
    '}) => any;\n\n} // namespace functions<|end|><|start|>user<|message|>Paris and Rome?<|end|><|start|>ass'
    'istant<|channel|>analysis<|message|>Two cities.<|end|><|start|>assistant to=functions.get_weather<|chan'
    'nel|>commentary json<|message|>{"city": "Paris"}<|call|><|start|>functions.get_weather to=assistant<|ch'
    'annel|>commentary<|message|>"sunny"<|end|><|start|>assistant to=functions.get_weather<|channel|>comment'
    'ary json<|message|>{"city": "Rome"}<|call|><|start|>functions.get_weather to=assistant<|channel|>commen'
    'tary<|message|>"rain"<|end|><|start|>assistant'
)
GEMMA = (
    '<bos><|turn>system\n<|tool>declaration:get_weather{description:<|"|>The weather in a city<|"|>,paramete'
    'rs:{properties:{city:{description:<|"|>The city<|"|>,type:<|"|>STRING<|"|>},unit:{enum:[<|"|>c<|"|>,<|"'
    '|>f<|"|>],type:<|"|>STRING<|"|>}},required:[<|"|>city<|"|>],type:<|"|>OBJECT<|"|>}}<tool|><turn|>\n'
    '<|turn>user\nParis and Rome?<turn|>\n<|turn>model\n'
    '<|channel>thought\nTwo cities.\n<channel|><|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|'
    '><|tool_call>call:get_weather{city:<|"|>Rome<|"|>}<tool_call|><|tool_response>response:get_weather{valu'
    'e:<|"|>rain<|"|>}<tool_response|><|tool_response>response:get_weather{value:<|"|>sunny<|"|>}<tool_respo'
    'nse|>'
)
GEMMA_GOLDEN = (  # the same format for a one-parameter tool, as rendered by gemma-4's template elsewhere
    '<|tool>declaration:weather{description:<|"|>Weather<|"|>,parameters:{properties:{city:{description:<|"|>City'
    '<|"|>,type:<|"|>STRING<|"|>}},required:[<|"|>city<|"|>],type:<|"|>OBJECT<|"|>}}<tool|><turn|>\n'
    '<|turn>user\nPlan<turn|>\n<|turn>model\n<|tool_call>call:weather{city:<|"|>Paris<|"|>}<tool_call|>'
    '<|tool_response>response:weather{value:<|"|>sunny<|"|>}<tool_response|>'
)


def render(family: str, messages, tools=TOOLS, **kwargs) -> str:
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(family), bos_token="<bos>")
    chat = "harmony" if family == "gpt_oss" else "gemma"
    return tokenizer.apply_chat_template(template_messages(chat, messages), tools=tools, tokenize=False,
                                         chat_template=TOKENIZER_SPECS[family].chat_template,
                                         add_generation_prompt=True, **kwargs)


def test_harmony_renders_tools_as_a_functions_namespace_and_each_call_before_its_own_result():
    assert render("gpt_oss", TWO_CALLS_ANSWERED) == HARMONY


def test_gemma_renders_tool_declarations_calls_and_results_in_its_own_notation():
    assert render("gemma4", TWO_CALLS_ANSWERED, enable_thinking=False) == GEMMA


def test_gemma_agrees_with_a_rendering_checked_against_its_real_template():
    tools = [{"type": "function", "function": {"name": "weather", "description": "Weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "description": "City"}}, "required": ["city"]}}}]
    messages = [{"role": "user", "content": "Plan"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
                {"role": "tool", "tool_call_id": "c", "content": "sunny"}]
    assert render("gemma4", messages, tools, enable_thinking=False).endswith(GEMMA_GOLDEN)


@pytest.mark.parametrize("family", ["gpt_oss", "gemma4"])
def test_an_answer_after_the_tool_results_drops_the_calls_reasoning_and_goes_on(family):
    answered = [*TWO_CALLS_ANSWERED, {"role": "assistant", "content": "Sunny and rainy."},
                {"role": "user", "content": "Thanks"}]
    text = render(family, answered, enable_thinking=False)
    assert "Two cities." not in text and "Sunny and rainy." in text
    assert text.count("get_weather") == (5 if family == "gpt_oss" else 5)


@pytest.mark.parametrize("family", ["gpt_oss", "gemma4"])
def test_without_tools_the_prompt_is_what_it_was_before_tools(family):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    text = render(family, messages, tools=None, enable_thinking=False)
    assert "functions" not in text and "<|tool>" not in text and "Be brief." in text


def test_tool_choice_none_shows_the_model_no_tools():
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    assert offered_tools(GenerationRequest.from_openai("r", "m", body))
    chosen_none = GenerationRequest.from_openai("r", "m", {**body, "tool_choice": "none"})
    assert not offered_tools(chosen_none) and chosen_none.tool_names == frozenset()


def test_only_required_and_named_tool_choices_become_a_constraint_for_the_grammar():
    from agent.engine.tool_choice import request_constraint, tool_call_constraint

    tools = [*TOOLS, {"type": "function", "function": {"name": "get_time"}}]
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": tools}

    def constraint(**fields):
        return tool_call_constraint(GenerationRequest.from_openai("r", "m", {**body, **fields}))

    assert constraint() is None and constraint(tool_choice="auto") is None and constraint(tool_choice="none") is None
    required = constraint(tool_choice="required", parallel_tool_calls=False)
    assert [t.name for t in required.tools] == ["get_weather", "get_time"] and not required.is_parallel
    assert required.forced_name is None and required.tools[1].parameters == '{"type":"object"}'
    named = constraint(tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert named.forced_name == "get_time" and named.is_parallel
    both = GenerationRequest.from_openai("r", "m", {**body, "tool_choice": "required",
                                                    "response_format": {"type": "json_object"}})
    assert request_constraint(both) == tool_call_constraint(both)  # the turn is the call
