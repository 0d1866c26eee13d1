"""The frames of the wire protocol (DESIGN.md §5), one pydantic model per `"type"`.

    agent → coordinator   register, heartbeat, inference_accepted, inference_rejected,
                          inference_response_chunk, inference_complete, inference_error, error
    coordinator → agent   registered, inference_request, cancel, load_model, unload_model, error

The field names of DESIGN.md §5 are fixed (other coordinators rely on them); fields are added, never
renamed, and every field is always written, defaults included. Numbers and strings are bounded so a
peer cannot make the agent hold more than a frame. Parse and encode with agent.wire.protocol.

Building a frame with a field it does not have is a bug and raises (extra="forbid"); a frame *from the
peer* may carry fields of a newer release, and agent.protocol.parse_message drops those.

Public names: the frame classes (Register ... UnloadModel, ErrorFrame), their parts (Hardware,
ModelEntry, AdmissionLimits, KVLayout, KVLayer, SlotStatus, MemoryStatus, ChunkDelta, ToolCallDelta, UsageReport,
Reservation), SlotState, ThermalState, FinishReason, Frame, MAX_TOOL_CALLS_PER_TURN, MAX_PREFIX_CHAINS.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from agent.wire.chat_body import ChatCompletionBody, Text
from agent.wire.logprobs import TokenLogprob
from agent.wire.tools import FUNCTION_NAME_PATTERN, MAX_CALL_ID_CHARS

MAX_ID_CHARS = 256
MAX_REASON_CHARS = 4096
MAX_BYTES = 2**53  # exact in every JSON implementation
MAX_CONTEXT_TOKENS = 2**22  # 4M tokens: above every architecture's real context (the catalog's is at most 262k)
MAX_MODELS = 64  # models one register or heartbeat may list: a Mac holds a handful
MAX_KV_LAYERS = 512  # layers of one kv_layout: the deepest served model has ~100
MAX_PREFIX_CHAINS = 256  # chain keys one slot status may report (the agent reports its 64 most recent by default)

RequestId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]
ModelId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]
Bytes = Annotated[int, Field(ge=0, le=MAX_BYTES)]
Count = Annotated[int, Field(ge=0, le=2**31)]
MAX_CHUNK_TOKENS = 4096  # one chunk is one decode step's text; far more than any step emits
Tps = Annotated[float, Field(ge=0, le=1e9)]
Reason = Annotated[str, Field(max_length=MAX_REASON_CHARS)]
Label = Annotated[str, Field(max_length=MAX_ID_CHARS)]
Tally = Annotated[int, Field(ge=0, le=2**53)]  # a count since a start: may pass 2^31 over a long uptime
ChainKey = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]  # agent.wire.prefix_chain's key of a message chain


def _type_is_required(schema: dict[str, Any]) -> None:
    # `type` has a default so frames are easy to build, but on the wire it is what tells them apart.
    if "type" in schema.get("properties", {}):
        schema["required"] = ["type", *schema.get("required", [])]
    schema.pop("additionalProperties", None)  # a receiver ignores fields it does not know


class Frame(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, json_schema_extra=_type_is_required)


class SlotState(StrEnum):
    COLD = "cold"
    LOADING = "loading"
    IDLE = "idle"
    RUNNING = "running"
    UNLOADING = "unloading"
    FAILED = "failed"


class ThermalState(StrEnum):  # macOS ProcessInfo.thermalState names; "unknown" elsewhere
    NOMINAL = "nominal"
    FAIR = "fair"
    SERIOUS = "serious"
    CRITICAL = "critical"
    UNKNOWN = "unknown"


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    ERROR = "error"
    TOOL_CALLS = "tool_calls"  # the turn ended with one or more calls (harmony's <|call|>, gemma's tool response)


# ---- agent → coordinator ------------------------------------------------------------------------

class Hardware(Frame):
    chip: Label | None
    memory_bytes: Bytes
    gpu_cores: Count | None
    cpu_cores: Count | None = None
    cpu_performance_cores: Count | None = None
    cpu_efficiency_cores: Count | None = None
    memory_bandwidth_gbps: Tps | None = None
    metal_working_set_bytes: Bytes | None = None
    machine_model: Label | None = None
    os_version: Label | None = None


class KVLayer(Frame):
    kind: Literal["full", "sliding"]
    num_kv_heads: Count
    head_dim: Count


class KVLayout(Frame):
    """Enough to rebuild the catalog's ModelSpec, so the coordinator's admission is byte-exact too."""

    architecture: Label
    kv_dtype: Label
    sliding_window: Annotated[int, Field(ge=0, le=MAX_CONTEXT_TOKENS)]
    layers: Annotated[tuple[KVLayer, ...], Field(max_length=MAX_KV_LAYERS)]


MAX_ROWS = 4096  # rows one slot may admit: far above any batch a Mac runs


class AdmissionLimits(Frame):
    """The agent's own numbers that admission reads besides its KV tracker (DESIGN.md §4): the coordinator
    runs the same check with them, so it never keeps a copy. The two with defaults default to the most
    a peer could mean (to the context, no clip), which keeps the coordinator conservative."""

    kv_safety_margin: Annotated[float, Field(ge=0, le=0.9)]  # share of each slot's budget kept free
    max_num_seqs: Annotated[int, Field(ge=1, le=MAX_ROWS)]  # requests one slot admits at once
    prefill_chunk_tokens: Annotated[int, Field(ge=1, le=2**20)]
    default_max_tokens: Annotated[int, Field(ge=1, le=2**31)] | None = None  # None: the context left
    output_clip_tokens: Annotated[int, Field(ge=1, le=2**31)] | None = None  # None: max_tokens unclipped


class VisionOffer(Frame):
    """What loading a model with its vision tower costs here, and the image processor's rule the coordinator
    estimates image requests with (agent/vision_tokens.py)."""

    max_soft_tokens: Annotated[int, Field(ge=1, le=65536)]  # per image (gemma-4: 280)
    patch_size: Annotated[int, Field(ge=1, le=1024)]
    pooling_kernel_size: Annotated[int, Field(ge=1, le=64)]
    weights_bytes: Bytes  # the tower's and projector's tensors (safetensors headers)
    reserve_bytes: Bytes  # activations of encoding the largest image (agent/vision_cost.py)
    fits: bool  # the load gate with vision, on this machine alone
    fit_reason: Reason


Modality = Literal["text", "image"]


class ModelEntry(Frame):
    id: ModelId
    weights_bytes: Bytes
    max_context: Annotated[int, Field(ge=0, le=MAX_CONTEXT_TOKENS)]
    kv_bytes_per_token: Bytes
    kv_fixed_bytes_per_sequence: Bytes
    fits: bool
    fit_reason: Reason
    activation_reserve_bytes: Bytes = 0
    kv_layout: KVLayout | None = None
    admission: AdmissionLimits | None = None  # None: the coordinator plans with conservative limits
    vision: VisionOffer | None = None  # None: text only (gpt-oss, or no vision tower on disk)


class Register(Frame):
    type: Literal["register"] = "register"
    protocol_version: Count  # the newest major version the agent speaks
    min_protocol_version: Count | None = None  # the oldest it still speaks; None: only protocol_version
    protocol_minor: Count = 0  # of protocol_version; minors only add fields, so they never decide anything
    agent_version: Label
    hardware: Hardware
    models: Annotated[tuple[ModelEntry, ...], Field(max_length=MAX_MODELS)]


class SlotStatus(Frame):
    model: ModelId
    state: SlotState
    num_running: Count = 0
    num_waiting: Count = 0
    kv_bytes_per_token: Bytes = 0
    kv_budget_bytes: Bytes = 0
    kv_reserved_bytes: Bytes = 0
    kv_used_bytes: Bytes = 0
    prefill_tps: Tps | None = None  # None until observed
    decode_tps: Tps | None = None
    weights_bytes: Bytes = 0
    expected_output_ratio: Annotated[float, Field(gt=0, le=1)] | None = None  # None: taken as 1
    failure_reason: Reason | None = None
    kv_longest_row_end_tokens: Annotated[int, Field(ge=0, le=MAX_CONTEXT_TOKENS)] | None = None  # the longest admitted row's expected end: rows pad to it
    modalities: Annotated[tuple[Modality, ...], Field(max_length=2)] = ("text",)  # "image": loaded with vision
    kv_cached_bytes: Bytes = 0  # the prefix cache: free-able room (the agent evicts it before refusing)
    # Minor 5: the prefix cache seen from outside. The chain keys (agent/wire/prefix_chain.py) of the slot's cached
    # prompts, most recently used first: the coordinator routes a conversation's next turn by them.
    prefix_chains: Annotated[tuple[ChainKey, ...], Field(max_length=MAX_PREFIX_CHAINS)] = ()
    prefix_hit_rate: Annotated[float, Field(ge=0, le=1)] = 0.0  # admitted requests that reused a prefix, of lookups
    prefix_hit_tokens: Tally = 0  # prompt tokens not prefilled thanks to it, since the slot loaded
    prefix_evictions: Tally = 0


class MemoryStatus(Frame):
    total_bytes: Bytes
    available_bytes: Bytes
    cap_bytes: Bytes
    engine_bytes: Bytes | None = None  # what the agent's engine holds now (admission.machine_room_bytes)


class Heartbeat(Frame):
    type: Literal["heartbeat"] = "heartbeat"
    seq: Count
    slots: Annotated[tuple[SlotStatus, ...], Field(max_length=MAX_MODELS)]
    memory: MemoryStatus
    thermal: ThermalState = ThermalState.UNKNOWN
    draining: bool = False  # stopping: send nothing new


class InferenceAccepted(Frame):
    type: Literal["inference_accepted"] = "inference_accepted"
    request_id: RequestId
    prompt_tokens: Count | None = None
    expected_output_tokens: Count | None = None
    reservation_bytes: Bytes | None = None


class InferenceRejected(Frame):
    type: Literal["inference_rejected"] = "inference_rejected"
    request_id: RequestId
    verdict: Literal["full", "never"]  # full: not now (retry_after_s); never: not on this node
    reason: Reason
    retry_after_s: Annotated[float, Field(ge=0, le=3600)] | None = None
    code: Label | None = None  # agent.errors' stable code (kv_full, cannot_fit, ...); None from older agents
    retryable: bool = True  # agent.errors.is_retryable(code): may another provider serve it


MAX_TOOL_CALLS_PER_TURN = 64  # calls one assistant turn may make: far more than a model makes at once


class ToolCallDelta(Frame):
    """A piece of one tool call, as OpenAI streams it: the first piece of a call carries its id and name,
    later ones only argument text to append."""

    index: Annotated[int, Field(ge=0, le=MAX_TOOL_CALLS_PER_TURN - 1)]
    id: Annotated[str, Field(min_length=1, max_length=MAX_CALL_ID_CHARS)] | None = None
    name: Annotated[str, Field(pattern=FUNCTION_NAME_PATTERN)] | None = None
    arguments: Text = ""  # a fragment of the call's JSON arguments


class ChunkDelta(Frame):
    content: Text = ""
    reasoning: Text = ""
    tool_calls: Annotated[tuple[ToolCallDelta, ...], Field(max_length=MAX_TOOL_CALLS_PER_TURN)] = ()

    @property
    def is_empty(self) -> bool:
        """Nothing a client would see: not a token for the deadlines (it may still count tokens, e.g. a channel header)."""
        return not (self.content or self.reasoning or self.tool_calls)

    @property
    def num_text_bytes(self) -> int:
        """UTF-8 bytes of what the client is shown: text, reasoning and tool calls' names and arguments."""
        num_bytes = len(self.content.encode()) + len(self.reasoning.encode())
        if self.tool_calls:  # most chunks have none: no generator to start
            num_bytes += sum(len((call.name or "").encode()) + len(call.arguments.encode()) for call in self.tool_calls)
        return num_bytes


class InferenceResponseChunk(Frame):
    type: Literal["inference_response_chunk"] = "inference_response_chunk"
    request_id: RequestId
    seq: Count
    delta: ChunkDelta
    # Tokens this chunk carries (the coordinator bills what it counts, never more). None from an older agent:
    # the coordinator then counts a chunk with text as one token (agent/coordinator/usage.py).
    num_tokens: Annotated[int, Field(ge=0, le=MAX_CHUNK_TOKENS)] | None = None
    # The content tokens' logprobs (agent/wire/logprobs.py), only when the request asked; a chunk carries at
    # most its num_tokens of them (the coordinator checks it).
    logprobs: Annotated[tuple[TokenLogprob, ...], Field(max_length=MAX_CHUNK_TOKENS)] | None = None


class UsageReport(Frame):
    prompt_tokens: Count
    completion_tokens: Count
    cached_tokens: Count = 0  # of prompt_tokens, those served from the agent's prefix cache (a claim, bounded)


class InferenceComplete(Frame):
    type: Literal["inference_complete"] = "inference_complete"
    request_id: RequestId
    usage: UsageReport
    finish_reason: FinishReason
    num_chunks: Count | None = None  # lets the coordinator see a lost chunk
    ttft_s: Annotated[float, Field(ge=0, le=1e6)] | None = None


class InferenceError(Frame):
    type: Literal["inference_error"] = "inference_error"
    request_id: RequestId
    code: Label
    message: Reason
    retryable: bool = False  # agent.errors.is_retryable(code), for a coordinator that does not know the code


class ErrorFrame(Frame):
    """The answer to a frame that could not be used (either direction); never closes the connection."""

    type: Literal["error"] = "error"
    code: Label
    message: Reason
    request_id: RequestId | None = None
    field: Annotated[str, Field(max_length=MAX_ID_CHARS)] | None = None


# ---- coordinator → agent ------------------------------------------------------------------------

Setting = Union[bool, int, float, Annotated[str, Field(max_length=MAX_REASON_CHARS)]]


class Registered(Frame):
    type: Literal["registered"] = "registered"
    provider_id: Label
    heartbeat_interval_s: Annotated[float, Field(gt=0, le=300)]
    protocol_version: Count | None = None  # the major version chosen; None: a coordinator from before versions
    protocol_minor: Count = 0  # the coordinator's own minor of it: from 4 it accepts inference_response_chunks
    settings: Annotated[dict[Label, Setting], Field(max_length=64)] = {}  # open-ended; unknown keys ignored


class Reservation(Frame):
    prompt_tokens: Count
    expected_output_tokens: Count
    bytes: Bytes


class InferenceRequest(Frame):
    type: Literal["inference_request"] = "inference_request"
    request_id: RequestId
    model: ModelId
    body: ChatCompletionBody
    reservation: Reservation | None = None


class Cancel(Frame):
    type: Literal["cancel"] = "cancel"
    request_id: RequestId
    reason: Reason | None = None


class LoadModel(Frame):
    type: Literal["load_model"] = "load_model"
    model: ModelId


class UnloadModel(Frame):
    type: Literal["unload_model"] = "unload_model"
    model: ModelId


