"""The continuous-batching replay (BatchKV) equals the real caches' bytes, step by step, as requests
join the running batch at different lengths, finish at different times and are cancelled; and the
ledger's predicted peak bounds what the batch then really holds."""

from __future__ import annotations

import json
from pathlib import Path

import mlx_lm
import pytest
from mlx_lm.generate import StopSequences
from mlx_lm.sample_utils import greedy_sampler

from agent.catalog import spec_from_model_dir
from agent.engine.batch_kv import BatchKV, PendingRow, predicted_peak_bytes
from agent.engine.batcher import Batcher, Row
from agent.engine.chat import ChatFormat, EncodedPrompt
from agent.engine.sampling import Guard
from agent.engine.schedule import ScheduleLimits
from agent.engine.types import Finish, FinishReason
from tests.engine_fixtures import NARROW

CHUNK = 64  # small prefill chunks so short prompts cross chunk, 256-step and window boundaries


def make_row(chat: ChatFormat, uid: int, prompt_tokens: int, max_tokens: int) -> Row:
    prompt = [3 + (uid * 7 + i) % 200 for i in range(prompt_tokens)]
    return Row(f"r{uid}", uid, prompt, max_tokens, greedy_sampler, [], StopSequences(), chat.tokenizer.detokenizer,
               chat.splitter(EncodedPrompt(prompt, "normal")), Guard())


class Mirror:
    """Applies to a BatchKV what each real step did to the generation batch."""

    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher
        self.replay = BatchKV(batcher.spec)

    def step(self) -> None:
        batcher = self.batcher
        decoding_before = set(batcher.decoding)
        prefilling_before = {row.uid: row for row in batcher.prefilling} | {row.uid: row for row in batcher.schedule.waiting}
        events = batcher.step()
        if decoding_before:
            self.replay.step(1)
        self.replay.leave({request_id for request_id, event in events if isinstance(event, Finish)})
        joined = [prefilling_before[uid] for uid in batcher.generation.uids if uid not in decoding_before
                  and uid in prefilling_before]
        if joined:
            group, _ = BatchKV.prefilled(batcher.spec, [r.request_id for r in joined], [len(r.prompt) for r in joined],
                                         CHUNK)
            self.replay.join(group)

    def generation_bytes(self) -> int:
        return sum(cache.nbytes for cache in self.batcher.generation.prompt_cache)


@pytest.fixture(scope="module", params=NARROW)
def batcher(request, tiny_models_dir) -> Batcher:
    model_dir: Path = tiny_models_dir / request.param
    model, tokenizer = mlx_lm.load(str(model_dir))
    spec = spec_from_model_dir(model_dir)
    batcher = Batcher(model, spec, ScheduleLimits(chunk_tokens=CHUNK))
    batcher.chat = ChatFormat(tokenizer, json.loads((model_dir / "config.json").read_text())["model_type"])
    return batcher


def test_the_replay_equals_the_real_generation_batch_bytes_as_rows_join_leave_and_are_cancelled(batcher):
    chat = batcher.chat
    mirror = Mirror(batcher)
    # (step at which it arrives, prompt tokens, max tokens): rows of different lengths joining a running
    # batch, crossing the 64-token chunks, the 256-token cache steps and the sliding windows (16 / 32).
    arrivals = {0: [(1, 5, 40), (2, 70, 12)], 3: [(3, 20, 30)], 9: [(4, 300, 25), (5, 290, 8)], 14: [(6, 2, 50)]}
    cancel_at = {20: "r3"}
    checked = 0
    for step in range(120):
        for uid, prompt, max_tokens in arrivals.get(step, []):
            batcher.add(make_row(chat, uid, prompt, max_tokens))
        if step in cancel_at:
            events = batcher.remove(cancel_at[step], lambda row: row.finish(FinishReason.CANCELLED))
            assert events and events[0][1].reason is FinishReason.CANCELLED
            mirror.replay.leave({cancel_at[step]})
        if not batcher.has_work and step > max(arrivals):
            break
        mirror.step()
        assert mirror.replay.ids == [batcher.decoding[uid].request_id for uid in batcher.generation.uids]
        assert mirror.generation_bytes() == mirror.replay.nbytes, f"step {step}"
        assert batcher.batch_kv().nbytes == mirror.replay.nbytes
        checked += 1
    assert not batcher.has_work and checked > 40
    assert batcher.used_bytes() == 0


def test_the_predicted_peak_bounds_the_bytes_the_batch_really_holds(batcher):
    chat = batcher.chat
    rows = [(11, 40, 30), (12, 150, 6), (13, 9, 60), (14, 75, 20)]
    predicted = predicted_peak_bytes(BatchKV(batcher.spec), {},
                                     [PendingRow(f"r{uid}", p, p + m) for uid, p, m in rows],
                                     ScheduleLimits(chunk_tokens=CHUNK))
    for uid, prompt, max_tokens in rows:
        batcher.add(make_row(chat, uid, prompt, max_tokens))
    observed = []
    while batcher.has_work:
        batcher.step()
        observed.append(batcher.used_bytes())
    assert max(observed) <= predicted
    assert max(observed) >= 0.5 * predicted  # a bound, but not a loose one


def test_a_short_prompt_is_not_stuck_behind_a_long_prefill_and_the_long_one_still_advances(batcher):
    chat = batcher.chat
    batcher.add(make_row(chat, 21, 400, 4))  # seven 64-token chunks
    batcher.step()
    batcher.add(make_row(chat, 22, 20, 4))
    steps = 0
    while not any(row.request_id == "r22" for row in batcher.decoding.values()):
        batcher.step()
        steps += 1
    long_group = next(group for group in batcher.schedule.groups if group.rows[0].request_id == "r21")
    assert steps <= 2 and long_group.chunks_left > 1
    while batcher.has_work:
        batcher.step()
    assert batcher.used_bytes() == 0
