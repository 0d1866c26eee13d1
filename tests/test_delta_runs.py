"""delta_runs.runs: a burst of Tokens as runs of one kind in order. Fed to the Responses and Messages states in
place of the Tokens one by one, the runs give the same response, the same text in the same order, in no more
events (fewer whenever two deltas of one kind were adjacent)."""

from __future__ import annotations

import re

from hypothesis import given, strategies as st

from agent.coordinator.delta_runs import runs, split
from agent.coordinator.dialects.messages_events import MessageState
from agent.coordinator.dialects.responses_events import ResponseState
from agent.coordinator.dialects.responses_request import ResponsesBody
from agent.coordinator.flow import Finished, Token
from agent.wire.frames import ToolCallDelta, UsageReport
from agent.wire.logprobs import TokenLogprob

TEXT = st.text(alphabet="ab é\n{}\"", min_size=1, max_size=6)
FINISHED = Finished("stop", UsageReport(prompt_tokens=3, completion_tokens=9))


@st.composite
def bursts(draw) -> list[Token]:
    """Tokens as a flow delivers them: text, reasoning, both, and tool calls opened (id, name) then continued."""
    tokens, num_calls = [], 0
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["content", "reasoning", "both", "call", "arguments"]))
        if kind == "call" and num_calls < 3:
            tokens.append(Token("", "", (), (ToolCallDelta(index=num_calls, id=f"call_{num_calls}", name="f"),)))
            num_calls += 1
        elif kind == "arguments" and num_calls:
            piece = ToolCallDelta(index=draw(st.integers(0, num_calls - 1)), arguments=draw(TEXT))
            tokens.append(Token("", "", (), (piece,)))
        else:
            content = draw(TEXT) if kind in ("content", "both") else ""
            logprobs = (TokenLogprob(token=content, logprob=-0.5),) if content and draw(st.booleans()) else ()
            tokens.append(Token(content, draw(TEXT) if kind in ("reasoning", "both") else "", logprobs))
    return tokens


def fed(state, tokens: list[Token]) -> list[dict]:
    events = state.begin()
    for token in tokens:
        events += state.token(token)
    return events + state.finish(FINISHED)


def deltas(events: list[dict]) -> list[tuple[str, str]]:
    """Each delta's (where it goes, text), adjacent ones of one place joined: the text a client accumulates."""
    found: list[tuple[str, str]] = []
    for event in events:
        delta = event.get("delta")
        if not isinstance(delta, (str, dict)) or event["type"] == "message_delta":
            continue
        place = f"{event.get('output_index', event.get('index'))}"
        text = delta if isinstance(delta, str) else next(v for k, v in delta.items() if k != "type")
        if found and found[-1][0] == place:
            found[-1] = (place, found[-1][1] + text)
        else:
            found.append((place, text))
    return found


def without_ids(value):
    return re.sub(r'"(rs|msg|fc)_[0-9a-f]{24}"', '"id"', repr(value).replace("'", '"'))


@given(bursts())
def test_a_burst_fed_as_runs_gives_the_same_responses_output_in_no_more_events(tokens):
    body = ResponsesBody(model="m", input="hi")
    one_by_one, merged = ResponseState("chatcmpl-1", body, "m", 0), ResponseState("chatcmpl-1", body, "m", 0)
    events, fewer = fed(one_by_one, tokens), fed(merged, runs(tokens))
    assert without_ids(merged.response()) == without_ids(one_by_one.response())
    assert deltas(fewer) == deltas(events)
    assert [e["type"] for e in fewer if not e["type"].endswith(".delta")] == \
        [e["type"] for e in events if not e["type"].endswith(".delta")]
    assert len(fewer) <= len(events)


@given(bursts())
def test_a_burst_fed_as_runs_gives_the_same_anthropic_message_in_no_more_events(tokens):
    one_by_one, merged = MessageState("chatcmpl-1", "m", 3), MessageState("chatcmpl-1", "m", 3)
    events, fewer = fed(one_by_one, tokens), fed(merged, runs(tokens))
    assert merged.message() == one_by_one.message()
    assert deltas(fewer) == deltas(events)
    assert len(fewer) <= len(events)


def test_adjacent_deltas_of_one_kind_merge_and_a_change_of_kind_starts_a_new_run():
    call = ToolCallDelta(index=0, id="call_1", name="get_weather")
    tokens = [Token("", "Let me "), Token("", "think."), Token("Sunny", ""), Token(" in Paris.", "Hm."),
              Token("", "", (), (call,)), Token("", "", (), (ToolCallDelta(index=0, arguments='{"city": '),)),
              Token("", "", (), (ToolCallDelta(index=0, arguments='"Paris"}'),))]
    assert runs(tokens) == [Token("", "Let me think."), Token("Sunny", ""), Token("", "Hm."), Token(" in Paris.", ""),
                            Token("", "", (), (call.model_copy(update={"arguments": '{"city": "Paris"}'}),))]


def test_a_tokens_logprobs_go_with_its_content():
    first, second = TokenLogprob(token="Sun", logprob=-0.1), TokenLogprob(token="ny", logprob=-0.2)
    assert runs([Token("Sun", "think", (first,)), Token("ny", "", (second,))]) == \
        [Token("", "think"), Token("Sunny", "", (first, second))]
    assert runs([Token("", "think", (first,)), Token("ny", "", (second,))]) == \
        [Token("", "think", (first,)), Token("ny", "", (second,))]  # none of content: kept, and not shown


def test_a_new_call_on_the_same_index_starts_a_new_run():
    first = ToolCallDelta(index=0, id="call_1", name="f", arguments="{}")
    again = ToolCallDelta(index=0, id="call_2", name="f", arguments="{}")
    assert [run.tool_calls[0].id for run in runs([Token("", "", (), (first,)), Token("", "", (), (again,))])] == \
        ["call_1", "call_2"]


def test_a_backlog_alternating_kinds_keeps_every_change_and_a_long_one_merges_into_one_run():
    alternating = [Token("c", "") if i % 2 else Token("", "r") for i in range(2_000)]
    assert len(runs(alternating)) == 2_000 and "".join(t.content + t.reasoning for t in runs(alternating)) == \
        "".join(t.content + t.reasoning for t in alternating)
    long = [Token("x" * 100, "") for _ in range(20_000)]  # 2 MB of backlog: joined once, not copied per piece
    assert runs(long) == [Token("x" * 2_000_000, "")]


def test_split_takes_the_tokens_and_the_end_that_follows_them():
    tokens = [Token("a", ""), Token("b", "")]
    assert split([*tokens, FINISHED]) == (tokens, FINISHED) and split(tokens) == (tokens, None)
    assert runs([]) == []
