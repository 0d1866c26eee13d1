"""The MLX engine's authoritative admission, cancel, failure isolation and memory gate, in bytes."""

from __future__ import annotations

import asyncio
import json
import shutil

import mlx.core as mx
import pytest

from agent.admission import Verdict
from agent.catalog import spec_from_model_dir
from agent.engine import (
    Delta,
    EngineConfig,
    FinishReason,
    LoadFailed,
    LoadRefused,
    MLXEngine,
    RequestRefused,
    SimulatedMemory,
    SlotState,
)
from agent.engine.kv_tracker import KVTracker
from agent.errors import UnknownModel, is_retryable
from agent.kvcost import kv_bytes_at
from tests.engine_fixtures import chat, run

NAME = "gpt-oss-tiny"
GIB = 1024**3


def raising_after(num_calls: int, message: str):
    calls = 0

    def processor(tokens: mx.array, logits: mx.array) -> mx.array:
        nonlocal calls
        calls += 1
        if calls > num_calls:
            raise RuntimeError(message)
        return logits

    return processor


async def first_tokens(stream, count: int) -> None:
    seen = 0
    async for event in stream:
        seen += event.num_tokens if isinstance(event, Delta) else 0
        if seen >= count:
            return


def test_cancel_takes_the_request_out_at_the_next_step_and_frees_its_kv(tiny_models_dir):
    async def scenario():
        async with MLXEngine({NAME: tiny_models_dir / NAME}) as engine:
            await engine.load(NAME)
            first, second = [await engine.submit(chat(r, NAME, "Same prompt", max_tokens=400, ignore_eos=True))
                             for r in ("first", "second")]
            await first_tokens(second, 5)
            before = (engine.snapshot().slot(NAME).kv_used_bytes, first.num_tokens)
            assert await engine.cancel("second")
            finish = (await second.collect()).finish
            after = (engine.snapshot().slot(NAME).kv_used_bytes, first.num_tokens)
            await first.cancel()
            await first.collect()
            return first.prompt_tokens, before, after, finish, engine.snapshot().slot(NAME)

    prompt, (used_two, tokens_two), (used_one, tokens_one), finish, idle = run(scenario())
    spec = spec_from_model_dir(tiny_models_dir / NAME)
    # Each row's caches are as long as the longest row's (the first one's prompt + generated tokens),
    # two rows before the cancel, one after.
    assert used_two == kv_bytes_at(spec, prompt + tokens_two, prompt_tokens=prompt, batch_size=2)
    assert used_one == kv_bytes_at(spec, prompt + tokens_one, prompt_tokens=prompt, batch_size=1)
    assert used_one < used_two
    assert finish.reason is FinishReason.CANCELLED and finish.usage.completion_tokens < 400
    assert idle.kv_used_bytes == 0 and idle.kv_reserved_bytes == 0 and idle.state is SlotState.IDLE


def test_admission_refuses_over_budget_with_a_reason_and_admits_again_after_completions(tiny_models_dir):
    spec = spec_from_model_dir(tiny_models_dir / NAME)

    async def scenario():
        async with MLXEngine({NAME: tiny_models_dir / NAME}) as probe:  # the prompt's length, to size the budget
            await probe.load(NAME)
            prompt = len(probe.chat_format(NAME).encode(chat("x", NAME, "Hello")).token_ids)
        dry = KVTracker(spec, 10**12)
        dry.admit("1", prompt, 200)
        dry.admit("2", prompt, 200)
        two = dry.reserved_bytes
        dry.admit("3", prompt, 200)
        budget = int((two + dry.reserved_bytes) / 2 / 0.95)  # two fit beside the 5 % margin, three do not
        config = EngineConfig(max_kv_budget_bytes=budget)
        async with MLXEngine({NAME: tiny_models_dir / NAME}, config=config) as engine:
            await engine.load(NAME)
            first, second = [await engine.submit(chat(r, NAME, "Hello", max_tokens=200, ignore_eos=True))
                             for r in ("1", "2")]
            with pytest.raises(RequestRefused) as refused:
                await engine.submit(chat("3", NAME, "Hello", max_tokens=200, ignore_eos=True))
            busy = engine.snapshot().slot(NAME)
            await first.collect()
            await second.collect()
            again = await engine.submit(chat("4", NAME, "Hello", max_tokens=20))
            return refused.value, busy, (await again.collect()).finish

    refusal, busy, finish = run(scenario())
    assert refusal.verdict is Verdict.FULL and is_retryable(refusal) and "free" in refusal.reason
    assert busy.num_running + busy.num_waiting == 2 and busy.kv_reserved_bytes <= busy.kv_budget_bytes
    assert finish.reason in (FinishReason.STOP, FinishReason.LENGTH)


def test_a_request_that_can_never_fit_is_refused_as_never(tiny_models_dir):
    async def scenario():
        async with MLXEngine({NAME: tiny_models_dir / NAME}, config=EngineConfig(max_kv_budget_bytes=200_000)) as engine:
            await engine.load(NAME)
            with pytest.raises(RequestRefused) as too_long:
                await engine.submit(chat("big", NAME, "Hello", max_tokens=100_000))
            with pytest.raises(RequestRefused) as past_context:
                await engine.submit(chat("ctx", NAME, "Hello", max_tokens=200_000))
            with pytest.raises(UnknownModel) as unknown:
                await engine.submit(chat("u", "no-such-model", "Hello"))
            return too_long.value, past_context.value, unknown.value

    too_long, past_context, unknown = run(scenario())
    assert too_long.verdict is Verdict.NEVER and "budget" in too_long.reason
    assert too_long.code == "cannot_fit" and is_retryable(too_long)  # a provider with more memory may serve it
    assert past_context.verdict is Verdict.NEVER and "context" in past_context.reason
    assert unknown.code == "unknown_model" and is_retryable(unknown) and "no-such-model" in str(unknown)


def test_an_exception_in_one_request_ends_only_that_request(tiny_models_dir):
    async def scenario():
        async with MLXEngine({NAME: tiny_models_dir / NAME}) as engine:
            await engine.load(NAME)
            healthy = [chat(f"ok{i}", NAME, f"Question {i}", max_tokens=20) for i in range(4)]
            alone = [(await (await engine.submit(r)).collect()).content for r in healthy]
            broken = chat("bad", NAME, "Question 9", max_tokens=20, logits_processors=(raising_after(3, "boom"),))
            wrong_shape = chat("shape", NAME, "Question 8", max_tokens=20,
                               logits_processors=(lambda tokens, logits: logits[:, :3],))
            streams = [await engine.submit(r) for r in (healthy[0], broken, healthy[1], wrong_shape, *healthy[2:])]
            done = await asyncio.gather(*(s.collect() for s in streams))
            after = await (await engine.submit(chat("later", NAME, "Question 1", max_tokens=5))).collect()
            return alone, done, after, engine.snapshot().slot(NAME)

    alone, done, after, slot = run(scenario())
    bad, wrong_shape = done[1], done[3]
    assert bad.finish.reason is FinishReason.ERROR and "boom" in bad.finish.error_message
    assert bad.finish.usage.completion_tokens <= 3
    assert wrong_shape.finish.reason is FinishReason.ERROR and "shape" in wrong_shape.finish.error_message
    assert [c.content for c in (done[0], done[2], done[4], done[5])] == alone
    assert after.finish.reason in (FinishReason.STOP, FinishReason.LENGTH)
    assert slot.state is SlotState.IDLE and slot.kv_used_bytes == 0


def test_a_model_that_fails_the_memory_gate_never_loads(tiny_models_dir):
    async def scenario():
        engine = MLXEngine({NAME: tiny_models_dir / NAME}, memory=SimulatedMemory(2 * GIB))
        async with engine:
            with pytest.raises(LoadRefused) as refused:
                await engine.load(NAME)
            with pytest.raises(RequestRefused) as not_ready:
                await engine.submit(chat("x", NAME, "Hello"))
            return refused.value, not_ready.value, engine.snapshot().slot(NAME)

    refused, not_ready, slot = run(scenario())
    assert not refused.decision.fits and "cap" in refused.decision.reason
    assert slot.state is SlotState.COLD and slot.weights_bytes == 0 and slot.reason == refused.decision.reason
    assert not_ready.verdict is Verdict.FULL and not_ready.code == "model_not_ready"


def test_a_load_that_fails_leaves_the_slot_failed_with_the_reason_and_the_engine_serving(tiny_models_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models_dir / NAME, broken)
    config = json.loads((broken / "config.json").read_text())
    config["num_hidden_layers"], config["layer_types"] = 6, config["layer_types"] + config["layer_types"][:2]
    (broken / "config.json").write_text(json.dumps(config))

    async def scenario():
        async with MLXEngine({"broken": broken, NAME: tiny_models_dir / NAME}) as engine:
            with pytest.raises(LoadFailed):
                await engine.load("broken")
            failed = engine.snapshot().slot("broken")
            await engine.load(NAME)
            completion = await (await engine.submit(chat("x", NAME, "Hello", max_tokens=4))).collect()
            return failed, completion

    failed, completion = run(scenario())
    assert failed.state is SlotState.FAILED and "load failed" in failed.reason
    assert completion.finish.reason in (FinishReason.STOP, FinishReason.LENGTH)


def test_unload_cancels_its_requests_frees_the_slot_and_it_loads_again(tiny_models_dir):
    async def scenario():
        async with MLXEngine({NAME: tiny_models_dir / NAME}) as engine:
            await engine.load(NAME)
            stream = await engine.submit(chat("long", NAME, "Hello", max_tokens=500, ignore_eos=True))
            await first_tokens(stream, 2)
            cold = await engine.unload(NAME)
            finish = (await stream.collect()).finish
            warm = await engine.load(NAME)
            return cold, finish, warm

    cold, finish, warm = run(scenario())
    assert cold.state is SlotState.COLD and cold.kv_budget_bytes == 0 and cold.weights_bytes == 0
    assert finish.reason is FinishReason.CANCELLED and finish.error_code == "model_unloaded"
    assert warm.state is SlotState.IDLE and warm.weights_bytes > 0


class SharedMachine:
    """A 64 GiB machine where other processes (another agent, an app) hold `others_bytes`: the OS's
    available memory is what neither they nor this engine's real MLX buffers hold."""

    def __init__(self, others_bytes: int) -> None:
        self.total, self.others_bytes = 64 * GIB, others_bytes

    def total_bytes(self) -> int:
        return self.total

    def engine_bytes(self) -> int:
        return mx.get_active_memory() + mx.get_cache_memory()

    def available_bytes(self) -> int:
        return self.total - self.others_bytes - self.engine_bytes()

    def metal_limit_bytes(self) -> None:
        return None


def test_the_kv_budget_leaves_out_what_other_processes_hold(tiny_models_dir):
    async def budget_beside(others_bytes: int) -> tuple[int, int]:
        engine = MLXEngine({NAME: tiny_models_dir / NAME}, memory=SharedMachine(others_bytes))
        async with engine:
            await engine.load(NAME)
            slot = engine.snapshot().slot(NAME)
            spec = engine._slot(NAME).spec
            return slot.kv_budget_bytes, spec.weights_bytes + spec.activation_reserve_bytes

    alone, fixed = run(budget_beside(0))
    beside, _ = run(budget_beside(60 * GIB))
    assert alone > 50 * GIB  # the cap's room: nothing else on the machine
    assert beside == 4 * GIB - fixed  # only what the other processes left, less weights and activations


def test_a_model_does_not_load_into_memory_other_processes_hold(tiny_models_dir):
    async def scenario():
        engine = MLXEngine({NAME: tiny_models_dir / NAME}, memory=SharedMachine(64 * GIB - 2**20))
        async with engine:
            with pytest.raises(LoadRefused) as refused:
                await engine.load(NAME)
            return refused.value.decision

    decision = run(scenario())
    assert not decision.fits and "other processes hold 64.00 GiB" in decision.reason
