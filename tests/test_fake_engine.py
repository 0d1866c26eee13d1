"""The fake engine: the real engine's interface, gate and ledger, with simulated batches and time."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys

import pytest

from agent.admission import Verdict
from agent.catalog import load_catalog
from agent.engine import (
    Delta,
    Engine,
    EngineConfig,
    FakeEngine,
    FakeScript,
    FakeTiming,
    FinishReason,
    LoadFailed,
    LoadRefused,
    RequestRefused,
    SlotState,
)
from agent.engine.schedule import ScheduleLimits
from agent.engine.types import HEARTBEAT_FIELDS
from agent.kvcost import kv_bytes_at
from tests.engine_fixtures import chat, run

GIB = 1024**3
CATALOG = load_catalog()
GPT_OSS, GEMMA = "gpt-oss-20b", "gemma-4-26b"
FAST = FakeTiming(prefill_tps=5000, decode_tps=100, batch_slowdown=0.1, load_seconds=1.0, unload_seconds=0.1)


class VirtualTime:
    """Time that passes only when slept: exact while one task sleeps at a time."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def fake(memory_gib: int = 64, models=(GPT_OSS, GEMMA), **options) -> FakeEngine:
    options.setdefault("time_scale", 0.0005)
    options.setdefault("timing", FAST)
    return FakeEngine({m: CATALOG[m] for m in models}, memory_bytes=memory_gib * GIB, **options)


def test_the_fake_and_the_mlx_engine_share_one_interface_and_the_fake_needs_no_mlx():
    from agent.engine.mlx_engine import MLXEngine

    for name in ("start", "stop", "load", "unload", "submit", "cancel"):
        assert inspect.iscoroutinefunction(getattr(FakeEngine, name))
        assert getattr(FakeEngine, name) is getattr(MLXEngine, name) is getattr(Engine, name)
    code = ("import sys, agent.engine; from agent.engine import FakeEngine, GenerationRequest;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_output_is_deterministic_and_differs_between_prompts():
    async def scenario():
        async with fake(models=(GPT_OSS,)) as engine:
            await engine.load(GPT_OSS)
            first = await (await engine.submit(chat("a", GPT_OSS, "Hello"))).collect()
            again = await (await engine.submit(chat("b", GPT_OSS, "Hello"))).collect()
            other = await (await engine.submit(chat("c", GPT_OSS, "Goodbye"))).collect()
            return first, again, other

    first, again, other = run(scenario())
    assert first.content == again.content and first.content != other.content
    assert first.finish.reason is FinishReason.STOP and first.finish.usage.completion_tokens >= 16


def test_time_follows_the_timing_model_on_an_injected_clock():
    clock = VirtualTime()
    timing = FakeTiming(prefill_tps=1000, decode_tps=50, batch_slowdown=0.1, load_seconds=2.0)

    async def scenario():
        # No prefix cache: the same prompt five times would otherwise prefill once (tests/test_fake_prefix_cache.py).
        engine = FakeEngine({GPT_OSS: CATALOG[GPT_OSS]}, memory_bytes=64 * GIB, timing=timing,
                            scripts=lambda request: FakeScript(output_tokens=20), clock=clock.clock, sleep=clock.sleep,
                            config=EngineConfig(max_prefix_cache_bytes=0))
        async with engine:
            await engine.load(GPT_OSS)
            loaded_at = clock.now
            one = await engine.submit(chat("one", GPT_OSS, "x" * 40))
            await one.collect()
            alone = clock.now - loaded_at
            streams = [await engine.submit(chat(f"s{i}", GPT_OSS, "x" * 40)) for i in range(4)]
            await asyncio.gather(*(stream.collect() for stream in streams))
            return loaded_at, alone, clock.now - loaded_at - alone, one.prompt_tokens

    loaded_at, alone, four, prompt = run(scenario())
    assert loaded_at == pytest.approx(2.0)
    # Prefill, one step for the last prompt token, then one step per token (the last one's successor is discarded).
    assert alone == pytest.approx((prompt - 1) / 1000 + 21 / 50)
    assert four == pytest.approx(4 * (prompt - 1) / 1000 + 21 * (1 + 0.1 * 3) / 50)


def test_each_model_follows_its_own_timing_and_a_model_without_one_the_default():
    clock = VirtualTime()
    default = FakeTiming(prefill_tps=1000, decode_tps=50, load_seconds=2.0)
    gemma = FakeTiming(prefill_tps=500, decode_tps=20, load_seconds=7.0)

    async def scenario():
        engine = FakeEngine({m: CATALOG[m] for m in (GPT_OSS, GEMMA)}, memory_bytes=128 * GIB, timing=default,
                            timings={GEMMA: gemma}, scripts=lambda request: FakeScript(output_tokens=20),
                            clock=clock.clock, sleep=clock.sleep)
        figures = {}
        async with engine:
            for model in (GPT_OSS, GEMMA):
                started = clock.now
                await engine.load(model)
                loaded = clock.now
                stream = await engine.submit(chat(f"on-{model}", model, "x" * 40))
                await stream.collect()
                figures[model] = (loaded - started, clock.now - loaded, stream.prompt_tokens)
        return figures

    figures = run(scenario())
    for model, timing in ((GPT_OSS, default), (GEMMA, gemma)):
        load, answer, prompt = figures[model]
        assert load == pytest.approx(timing.load_seconds)
        assert answer == pytest.approx((prompt - 1) / timing.prefill_tps + 21 / timing.decode_tps)


@pytest.mark.parametrize("max_prefill_rows", [1, 8])
def test_the_fake_engine_prefills_in_the_groups_its_schedule_allows(max_prefill_rows):
    """Four equal prompts: one group under the default cap (first tokens together), four under a cap of one
    (first tokens one after the other)."""
    clock = VirtualTime()

    async def scenario():
        engine = FakeEngine({GPT_OSS: CATALOG[GPT_OSS]}, memory_bytes=64 * GIB, timing=FAST,
                            scripts=lambda request: FakeScript(output_tokens=8), clock=clock.clock,
                            sleep=clock.sleep,
                            config=EngineConfig(schedule=ScheduleLimits(max_prefill_rows=max_prefill_rows)))
        first_token_at: dict[str, float] = {}

        async def consume(stream) -> None:
            async for event in stream:
                if isinstance(event, Delta):
                    first_token_at.setdefault(stream.request_id, clock.now)

        async with engine:
            await engine.load(GPT_OSS)
            streams = [await engine.submit(chat(f"s{i}", GPT_OSS, "x" * 400)) for i in range(4)]
            await asyncio.gather(*(consume(stream) for stream in streams))
        return [first_token_at[f"s{i}"] for i in range(4)]

    times = run(scenario())
    if max_prefill_rows == 1:
        assert times == sorted(times) and len(set(times)) == 4
    else:
        assert len(set(times)) == 1


def test_the_memory_gate_is_the_real_one_on_the_simulated_machine():
    async def scenario():
        async with fake(memory_gib=16) as small, fake(memory_gib=24) as medium:
            with pytest.raises(LoadRefused) as refused:
                await small.load(GPT_OSS)
            loaded = await medium.load(GPT_OSS)
            with pytest.raises(LoadRefused) as no_room:
                await medium.load(GEMMA)
            return refused.value, small.snapshot().slot(GPT_OSS), loaded, no_room.value

    refused, cold, loaded, no_room = run(scenario())
    assert "cap" in refused.decision.reason and cold.state is SlotState.COLD and cold.reason
    assert loaded.state is SlotState.IDLE and loaded.kv_budget_bytes == pytest.approx(7.35 * GIB, rel=0.01)
    assert not no_room.decision.fits


def test_admission_uses_the_real_ledger_refuses_when_full_and_admits_after_completions():
    long_prompt = "word " * 40_000  # about 50k tokens

    async def scenario():
        async with fake(memory_gib=24, models=(GPT_OSS,)) as engine:
            await engine.load(GPT_OSS)
            admitted, refusal = [], None
            while refusal is None:
                try:
                    admitted.append(await engine.submit(chat(f"r{len(admitted)}", GPT_OSS, long_prompt,
                                                             max_tokens=4096)))
                except RequestRefused as exc:
                    refusal = exc
            full = engine.snapshot().slot(GPT_OSS)
            await asyncio.gather(*(stream.collect() for stream in admitted))
            later = await engine.submit(chat("later", GPT_OSS, long_prompt, max_tokens=4096))
            return len(admitted), refusal, full, await later.collect()

    count, refusal, full, later = run(scenario())
    assert count >= 2 and refusal.verdict is Verdict.FULL and "free" in refusal.reason
    assert full.kv_reserved_bytes <= full.kv_budget_bytes and full.num_waiting + full.num_running == count
    assert later.finish.reason is FinishReason.STOP


def test_scripted_failures_end_only_their_request_and_a_failed_load_leaves_the_slot_failed():
    def scripts(request):
        return FakeScript(fail_after_tokens=3, error="injected") if request.request_id == "bad" else FakeScript()

    async def scenario():
        async with fake(scripts=scripts, fail_loads={GEMMA: "weights unreadable"}) as engine:
            with pytest.raises(LoadFailed):
                await engine.load(GEMMA)
            await engine.load(GPT_OSS)
            requests = [chat(r, GPT_OSS, f"prompt {r}") for r in ("ok1", "bad", "ok2")]
            alone = [(await (await engine.submit(chat(f"{r.request_id}-alone", GPT_OSS, r.messages[0]["content"])))
                      .collect()).content for r in requests if r.request_id != "bad"]
            streams = [await engine.submit(request) for request in requests]
            done = await asyncio.gather(*(stream.collect() for stream in streams))
            return engine.snapshot().slot(GEMMA), alone, done

    gemma, alone, (ok1, bad, ok2) = run(scenario())
    assert gemma.state is SlotState.FAILED and "weights unreadable" in gemma.reason
    assert bad.finish.reason is FinishReason.ERROR and bad.finish.error_message == "injected"
    assert bad.finish.usage.completion_tokens == 3
    assert [ok1.content, ok2.content] == alone


def test_cancel_frees_the_simulated_kv_in_engine_bytes():
    async def scenario():
        async with fake(models=(GPT_OSS,), scripts=lambda request: FakeScript(output_tokens=10_000)) as engine:
            await engine.load(GPT_OSS)
            a, b = [await engine.submit(chat(r, GPT_OSS, "Same prompt", max_tokens=8000)) for r in ("a", "b")]
            async for event in b:
                if isinstance(event, Delta) and b.num_tokens >= 3:
                    break
            before = (engine.snapshot().slot(GPT_OSS).kv_used_bytes, a.num_tokens)
            await engine.cancel("b")
            finish = (await b.collect()).finish
            after = engine.snapshot().slot(GPT_OSS).kv_used_bytes
            await a.cancel()
            await a.collect()
            return a.prompt_tokens, before, after, finish, engine.snapshot().slot(GPT_OSS)

    prompt, (used_two, tokens), used_one, finish, idle = run(scenario())
    spec = CATALOG[GPT_OSS]
    assert used_two == kv_bytes_at(spec, prompt + tokens, prompt_tokens=prompt, batch_size=2)
    assert 0 < used_one < used_two and finish.reason is FinishReason.CANCELLED
    assert idle.kv_used_bytes == 0 and idle.state is SlotState.IDLE


def test_a_slow_consumer_gets_merged_deltas_and_holds_no_one_up():
    async def scenario():
        async with fake(models=(GPT_OSS,)) as engine:
            await engine.load(GPT_OSS)
            slow = await engine.submit(chat("slow", GPT_OSS, "Hello"))
            fast = [await engine.submit(chat(f"f{i}", GPT_OSS, f"Other {i}")) for i in range(3)]
            await asyncio.gather(*(stream.collect() for stream in fast))
            await asyncio.wait_for(slow.finished(), 10)  # finished while nobody read it
            return [event async for event in slow]

    events = run(scenario())
    assert len(events) == 2 and isinstance(events[0], Delta) and events[1].reason is FinishReason.STOP
    assert events[0].num_tokens == events[1].usage.completion_tokens


def test_stop_strings_end_the_stream_before_the_stop_text():
    async def scenario():
        async with fake(models=(GPT_OSS,), scripts=lambda request: FakeScript(content="one two three four")) as engine:
            await engine.load(GPT_OSS)
            return await (await engine.submit(chat("s", GPT_OSS, "Count", stop=("three",)))).collect()

    completion = run(scenario())
    assert completion.content == " one two " and completion.finish.reason is FinishReason.STOP


def test_an_idle_slot_unloads_after_the_configured_time_and_keeps_warm_by_default():
    async def scenario(config):
        clock = VirtualTime()
        engine = fake(models=(GPT_OSS,), config=config, clock=clock.clock, sleep=clock.sleep)
        async with engine:
            await engine.load(GPT_OSS)
            await (await engine.submit(chat("x", GPT_OSS, "Hello"))).collect()
            idle_at = clock.now
            for _ in range(1000):  # each idle check sleeps 5 virtual seconds
                await asyncio.sleep(0)
                if engine.snapshot().slot(GPT_OSS).state is SlotState.COLD:
                    break
            return engine.snapshot().slot(GPT_OSS).state, clock.now - idle_at

    state, waited = run(scenario(EngineConfig(idle_unload_after_s=60, idle_check_interval_s=5)))
    assert state is SlotState.COLD and 60 <= waited <= 70
    assert run(scenario(EngineConfig()))[0] is SlotState.IDLE


def test_snapshots_carry_the_heartbeat_wire_names():
    async def scenario():
        async with fake(models=(GPT_OSS,)) as engine:
            await engine.load(GPT_OSS)
            stream = await engine.submit(chat("x", GPT_OSS, "Hello"))
            busy = engine.snapshot().slot(GPT_OSS).heartbeat()
            await stream.collect()
            return busy

    heartbeat = run(scenario())
    assert tuple(heartbeat) == HEARTBEAT_FIELDS
    assert heartbeat["model"] == GPT_OSS and heartbeat["state"] == "running" and heartbeat["kv_reserved_bytes"] > 0
    assert heartbeat["kv_bytes_per_token"] == 24_576
