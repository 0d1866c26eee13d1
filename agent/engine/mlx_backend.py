"""The MLX thread: the one thread that loads models and runs every model's batch (and, for a model loaded
with vision, encodes each image request's images when it is inserted: agent/engine/vision.py).

Commands (load, unload, insert, cancel, stop) arrive on a thread-safe queue; the thread drains it
between steps, steps every model that has work, and hands each step's events, cache bytes and batch
shape to the event loop with one `call_soon_threadsafe` per model and step. It blocks on the queue
only when no model has work. Nothing here ever waits on the event loop or on a consumer.

A load evaluates the weights a slice at a time between other models' steps (agent/engine/loading.py).
Tokenizers load and prompts are encoded off this thread (HF tokenizers, no MLX).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import itertools
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import structlog
from mlx_lm.generate import generation_stream
from mlx_lm.sample_utils import greedy_sampler
from mlx_lm.utils import load_config, load_tokenizer

from agent.catalog import ModelSpec
from agent.engine.backend import Deliver, Job, Loaded, Prompt, StepReport
from agent.engine.batcher import Batcher, Row
from agent.engine.chat import ChatFormat, EncodedPrompt
from agent.engine.constrained import ConstrainedRow, GrammarCache
from agent.engine.image_feed import RowImages
from agent.engine.image_prompt import prepare_images
from agent.engine.loading import IncrementalLoad, wired_limit
from agent.engine.logit_bias import check_token_ids
from agent.engine.logprobs import LogprobReader
from agent.engine.prefix_store import PrefixStore
from agent.engine.sampling import Guard, make_processors, make_sampler, make_stop_sequences
from agent.engine.schedule import ScheduleLimits
from agent.engine.tool_choice import request_constraint
from agent.engine.types import (
    EngineNotRunning, Event, Finish, FinishReason, GenerationRequest, InvalidRequest, Usage,
)
from agent.engine.vision import PreparedImage, VisionTower, vision_tower
from agent.images import ImageLimits

log = structlog.get_logger(__name__)

@dataclass(slots=True)
class _Load:
    model: str
    source: Path
    spec: ModelSpec
    chat: ChatFormat
    future: asyncio.Future
    vision: VisionTower | None = None


@dataclass(slots=True)
class _Unload:
    model: str
    future: asyncio.Future


@dataclass(slots=True)
class _Insert:
    model: str
    job: Job


@dataclass(slots=True)
class _Cancel:
    model: str
    request_id: str


@dataclass(slots=True)
class _DropPrefixes:
    model: str
    entry_ids: list[int]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A prompt as the MLX thread takes it: its tokens, and the matcher of its constraint (if any)."""

    encoded: EncodedPrompt
    matcher: Any = None
    images: tuple[PreparedImage, ...] = ()  # in prompt order
    image_positions: tuple[int, ...] = ()  # prompt indices of their soft tokens


_STOP = object()


class MLXBackend:
    def __init__(self, *, schedule: ScheduleLimits = ScheduleLimits(), image_limits: ImageLimits = ImageLimits()) -> None:
        self.schedule, self.image_limits = schedule, image_limits
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deliver: Deliver | None = None
        self._chats: dict[str, ChatFormat] = {}  # loop side: encodes prompts
        self._grammars: dict[str, GrammarCache] = {}  # loop side: compiles constraints
        self._visions: dict[str, VisionTower] = {}  # loop side: prepares images (models loaded with vision)
        # Owned by the MLX thread:
        self._batchers: dict[str, Batcher] = {}
        self._formats: dict[str, ChatFormat] = {}
        self._loading: dict[str, tuple[_Load, IncrementalLoad]] = {}
        self._towers: dict[str, VisionTower] = {}
        self._uids = itertools.count()

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def supports_vision(self) -> bool:
        return importlib.util.find_spec("mlx_vlm") is not None

    async def start(self, deliver: Deliver) -> None:
        self._loop, self._deliver = asyncio.get_running_loop(), deliver
        self._thread = threading.Thread(target=self._run, name="mlx-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._inbox.put(_STOP)
            await asyncio.to_thread(self._thread.join)

    async def load(self, model: str, spec: ModelSpec, source: Path | None, *, with_vision: bool = False) -> Loaded:
        if source is None:
            raise FileNotFoundError(f"{model}: no model directory to load from")
        config = await asyncio.to_thread(load_config, source)
        tokenizer = await asyncio.to_thread(load_tokenizer, source, eos_token_ids=config.get("eos_token_id"))
        vision = await asyncio.to_thread(vision_tower, Path(source)) if with_vision else None
        chat = ChatFormat(tokenizer, config.get("model_type", ""))
        if vision is not None:
            chat.image_marker = tokenizer.convert_ids_to_tokens(vision.files.image_token_id)
        grammars = await asyncio.to_thread(GrammarCache, tokenizer, chat.family)
        loaded = await self._call(_Load(model, Path(source), spec, chat, self._future(), vision))
        self._chats[model], self._grammars[model] = chat, grammars
        if vision is not None:
            self._visions[model] = vision
        return loaded

    async def unload(self, model: str) -> None:
        self._chats.pop(model, None)
        self._grammars.pop(model, None)
        self._visions.pop(model, None)
        await self._call(_Unload(model, self._future()))

    def chat_format(self, model: str) -> ChatFormat:
        """The loaded model's chat formatting (its tokenizer, template and channel splitter)."""
        return self._chats[model]

    async def prepare(self, model: str, request: GenerationRequest) -> Prompt:
        chat = self._chats.get(model)
        if chat is None:
            raise EngineNotRunning(f"{model} is not loaded")
        check_token_ids(request.logit_bias, len(chat.tokenizer))
        if request.images and model not in self._visions:
            raise InvalidRequest(f"{request.images[0].label}: {model} is loaded text-only here; it cannot take images")
        encoded = await asyncio.to_thread(chat.encode, request)
        images: tuple[PreparedImage, ...] = ()
        positions: tuple[int, ...] = ()
        if request.images:  # a corrupt or oversized image fails here, before any KV
            prompt = await asyncio.to_thread(prepare_images, self._visions[model], request, encoded.token_ids,
                                             self.image_limits, chat.image_marker or "")
            encoded = EncodedPrompt(prompt.token_ids, encoded.initial_state)
            images, positions = prompt.images, tuple(prompt.positions)
        matcher = None
        if (constraint := request_constraint(request)) is not None:  # a bad schema fails here, before any KV
            matcher = await asyncio.to_thread(self._grammars[model].matcher, constraint, request.max_tokens,
                                              is_reasoning=chat.is_reasoning(request))
        cacheable = () if images else tuple(encoded.token_ids)  # image features are not keyed by token ids
        return Prompt(len(encoded.token_ids), _Prepared(encoded, matcher, images, positions), cacheable)

    def grammar_cache(self, model: str) -> GrammarCache:
        """The loaded model's compiled grammars (and the MLX thread's mask times, for the bench)."""
        return self._grammars[model]

    def insert(self, model: str, job: Job) -> None:
        self._inbox.put(_Insert(model, job))

    def cancel(self, model: str, request_id: str) -> None:
        self._inbox.put(_Cancel(model, request_id))

    def drop_prefixes(self, model: str, entry_ids: list[int]) -> None:
        self._inbox.put(_DropPrefixes(model, list(entry_ids)))

    def _future(self) -> asyncio.Future:
        return self._loop.create_future()

    async def _call(self, command: _Load | _Unload) -> Any:
        if not self.is_running:
            raise EngineNotRunning("the MLX thread is not running")
        self._inbox.put(command)
        return await command.future

    # Everything below runs on the MLX thread.

    def _run(self) -> None:
        with mx.stream(generation_stream), wired_limit():
            try:
                while self._turn():
                    pass
            except BaseException as exc:  # a bug: end every request and load rather than hang them
                log.exception("engine.thread_crashed")
                self._shutdown(f"the engine thread failed: {exc}")
            finally:
                self._batchers.clear()
                self._loading.clear()
                gc.collect()
                mx.synchronize()
                mx.clear_cache()
        # This thread's MLX streams die with it, not at interpreter exit (where a still-joinable stream
        # thread aborts the process: "terminate called without an active exception", mlx#3126).
        mx.clear_streams()

    def _turn(self) -> bool:
        busy = bool(self._loading) or any(batcher.has_work for batcher in self._batchers.values())
        for command in self._drain(block=not busy):
            if command is _STOP:
                self._shutdown("the engine stopped")
                return False
            self._handle(command)
        for model, batcher in self._batchers.items():
            if batcher.has_work:
                self._report(model, batcher, batcher.step())
        for model, (command, job) in list(self._loading.items()):
            self._advance_load(model, command, job)
        return True

    def _drain(self, *, block: bool) -> list[object]:
        commands = [self._inbox.get()] if block else []
        with contextlib.suppress(queue.Empty):
            while True:
                commands.append(self._inbox.get_nowait())
        return commands

    def _handle(self, command: object) -> None:
        if isinstance(command, _Insert):
            self._insert(command)
        elif isinstance(command, _Cancel):
            batcher = self._batchers.get(command.model)
            if batcher is not None:
                events = batcher.remove(command.request_id, lambda row: row.finish(FinishReason.CANCELLED))
                self._report(command.model, batcher, events)
        elif isinstance(command, _DropPrefixes):
            batcher = self._batchers.get(command.model)
            if batcher is not None:
                batcher.prefixes.drop(command.entry_ids)
        elif isinstance(command, _Load):
            try:
                self._loading[command.model] = (command, IncrementalLoad(command.source))
            except Exception as exc:
                self._resolve(command.future, exc)
        elif isinstance(command, _Unload):
            self._unload(command)

    def _insert(self, command: _Insert) -> None:
        batcher, chat = self._batchers.get(command.model), self._formats.get(command.model)
        request, prompt = command.job.request, command.job.prompt
        prepared: _Prepared = prompt.payload
        try:
            if batcher is None or chat is None:
                raise EngineNotRunning(f"{command.model} is not loaded")
            guard = Guard()
            job = command.job
            reused = None if job.reuse is None else batcher.prefixes.reuse(job.reuse)
            sampler = make_sampler(request)
            processors = make_processors(request)
            grammar = None
            if prepared.matcher is not None:  # masked by the batch, one operation for all its rows
                grammars = self._grammars[command.model]
                grammar = ConstrainedRow(prepared.matcher, grammars.tokenizer.vocab_size,
                                         chat.tokenizer.eos_token_ids, guard, grammars.mask_times)
            batcher.add(Row(
                request_id=request.request_id, uid=next(self._uids), prompt=list(prepared.encoded.token_ids),
                max_tokens=command.job.max_tokens,
                sampler=sampler if sampler is greedy_sampler else guard.sampler(sampler),
                processors=[guard.processor(p) for p in processors],
                stop=make_stop_sequences(chat.tokenizer, request), detokenizer=chat.detokenizer(request),
                splitter=chat.splitter(prepared.encoded, request.stop, request.tool_names,
                                       is_parallel=request.parallel_tool_calls is not False), guard=guard,
                logprobs=_logprob_reader(chat, request), markup_ids=chat.markup_ids, grammar=grammar,
                images=self._row_images(command.model, prepared), reused=reused,
                cached_tokens=0 if job.reuse is None else job.reuse.num_tokens,
                is_cacheable=job.keep_prefix and not prepared.images, prefix_chain=request.prefix_chain,
            ))
        except Exception as exc:
            event = Finish(FinishReason.ERROR, Usage(prompt.num_tokens, 0), "generation_error", str(exc)[:500])
            if batcher is None:
                self._send(StepReport(command.model, [(request.request_id, event)], 0, None))
            else:
                self._report(command.model, batcher, [(request.request_id, event)])

    def _row_images(self, model: str, prepared: _Prepared) -> RowImages | None:
        """The row's soft-token embeddings, encoded now (the request's own failure if the tower fails)."""
        if not prepared.images:
            return None
        return self._towers[model].row_images(prepared.images, prepared.image_positions)

    def _advance_load(self, model: str, command: _Load, job: IncrementalLoad) -> None:
        try:
            if not job.advance():
                return
            vision, vision_bytes = command.vision, 0
            if vision is not None:
                vision_bytes = vision.load(command.source, job.model)
                self._towers[model] = vision
            image_token_id = None if vision is None else vision.files.image_token_id
            self._batchers[model] = batcher = Batcher(job.model, command.spec, self.schedule, image_token_id)
            batcher.prefixes = PrefixStore()
            self._formats[model] = command.chat
            result: Loaded | BaseException = Loaded(job.weights_bytes + vision_bytes, has_vision=vision is not None)
        except Exception as exc:
            result = exc
        del self._loading[model]
        self._resolve(command.future, result)

    def _unload(self, command: _Unload) -> None:
        batcher = self._batchers.pop(command.model, None)
        self._formats.pop(command.model, None)
        self._towers.pop(command.model, None)
        if batcher is not None:
            events = batcher.remove_all(lambda row: row.finish(FinishReason.CANCELLED, "model_unloaded",
                                                               f"{command.model} was unloaded"))
            self._report(command.model, batcher, events)
            del batcher
        gc.collect()
        mx.clear_cache()
        self._resolve(command.future, None)

    def _shutdown(self, message: str) -> None:
        for model, batcher in self._batchers.items():
            events = batcher.remove_all(lambda row: row.finish(FinishReason.CANCELLED, "engine_stopped", message))
            self._report(model, batcher, events)
        for command, _ in self._loading.values():
            self._resolve(command.future, EngineNotRunning(message))
        self._loading.clear()
        with contextlib.suppress(queue.Empty):
            while True:
                command = self._inbox.get_nowait()
                if isinstance(command, (_Load, _Unload)):
                    self._resolve(command.future, EngineNotRunning(message))

    def _report(self, model: str, batcher: Batcher, events: list[tuple[str, Event]]) -> None:
        timing, batcher.timing = batcher.timing, type(batcher.timing)()
        self._send(StepReport(model, events, batcher.used_bytes(), batcher.batch_kv(), timing.prefill_tokens,
                              timing.prefill_seconds, timing.decode_tokens, timing.decode_seconds,
                              batcher.take_captured()))

    def _send(self, report: StepReport) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            self._loop.call_soon_threadsafe(self._deliver, report)

    def _resolve(self, future: asyncio.Future, result: object) -> None:
        def settle() -> None:
            if future.done():
                return
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(settle)


def _logprob_reader(chat: ChatFormat, request: GenerationRequest) -> LogprobReader | None:
    if request.num_top_logprobs is None:
        return None
    return LogprobReader(chat.token_text, request.num_top_logprobs)
