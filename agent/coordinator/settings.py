"""The coordinator's knobs, in one frozen record, with defaults for one person's local use.

Times are seconds of the event loop's clock; tests scale them down rather than sleeping.

Public names: CoordinatorSettings, ReasoningField, DEFAULT_HOST, DEFAULT_PORT, is_loopback_host.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from agent.coordinator.billing.client_ratelimit import DEFAULT_OPEN_REQUESTS_PER_MINUTE_PER_IP, MAX_RATE_LIMITED_CLIENTS
from agent.coordinator.billing.ledger import MAX_BACKLOG_ENTRIES, RETRY_MAX_S

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MIN_CAPPED_OUTPUT_TOKENS = 16  # a balance covering less output than this refuses (429 insufficient_quota), not caps

# Where reasoning goes in responses: `reasoning` (OpenRouter, vLLM ≥ 0.10, Ollama), `reasoning_content`
# (DeepSeek, older vLLM), or both (a client that reads either sees it; one that sums both sees it twice).
ReasoningField = Literal["reasoning", "reasoning_content", "both"]
HttpParser = Literal["auto", "h11", "httptools"]  # "auto" and "httptools": httptools when installed, else h11


@dataclass(frozen=True, slots=True)
class CoordinatorSettings:
    # agents
    heartbeat_interval_s: float = 2.0  # sent to each agent in `registered`
    missed_heartbeats: int = 3  # a provider silent for this many intervals is evicted
    provider_token: str | None = None  # None: any token is accepted (local use)
    register_timeout_s: float = 10.0
    bad_frame_log_lines: int = 10  # log lines for bad frames per link per interval; the rest are counted
    bad_frame_log_interval_s: float = 60.0
    max_bad_frames: int = 1000  # bad frames per link per interval before the link is closed (each is answered)
    max_provider_links_per_ip: int = 64  # live provider websockets from one address (raise it for a local fleet)
    max_provider_links_per_credential: int = 256  # ... presenting one provider credential (the shared token too)
    # HTTP: uvicorn's limits, and a head deadline of our own (http/head_deadline.py) against slowloris
    http_max_connections: int = 1024  # uvicorn limit_concurrency: connections and websockets beyond it get a 503
    http_keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    http_max_header_bytes: int = 64 * 1024  # a request head larger is refused (400)
    http_parser: HttpParser = "auto"  # httptools (C, uvicorn's own default) when installed, else h11
    http_head_timeout_s: float = 10.0  # a whole request head must arrive within this of connecting
    # The collector, for `serve`'s process (http/gc_tuning.py): container objects allocated between young
    # collections (Python's default is 700, a collection every few relayed tokens); 0 keeps Python's own.
    gc_young_threshold: int = 20_000
    body_read_timeout_s: float = 30.0  # the whole request body must arrive within this
    max_remembered_models: int = 64  # models listed (503 while unserved) after their last provider left
    # the queue, per model
    queue_depth: int = 256
    queue_max_wait_s: float = 30.0
    # routing by prefix (routing/prefix_routes.py): conversations remembered, and when the provider holding a
    # request's prefix is preferred (routing/holder_preference.py: its cached prefix counts as this many rows fewer, and
    # with the request it holds at most max_load × the warm slots' mean rows, plus one)
    prefix_routing: bool = True  # False: place by load alone (the routes are still recorded)
    max_prefix_routes: int = 100_000
    prefix_affinity_slack_rows: int = 2
    prefix_affinity_max_load: float = 1.5
    retry_after_s: float = 2.0  # the Retry-After of a 429 when no agent gave a better hint
    max_retry_after_s: float = 30.0  # the most Retry-After a consumer is told, whatever an agent hinted
    # one request's attempts
    max_attempts: int = 3  # provider failures (error, link loss, timeout) before the first token
    # Providers that must say "invalid_request" (the request itself cannot be served) before a consumer hears
    # a 400: one stranger's word is tried on another provider first; when no other can take it, it is the 400.
    invalid_request_confirmations: int = 2
    accept_timeout_s: float = 15.0  # inference_request → accepted/rejected (the agent tokenizes, then admits)
    # deadlines (deadlines.py): what a provider reports may shorten them, never stretch them past these
    first_token_base_s: float = 30.0  # accepted → first token for a short prompt (counted from accepted, not the send)
    first_token_s_per_image: float = 5.0  # ... plus this per image: the vision tower encodes it before the prefill
    prefill_slack: float = 2.0  # times the prompt's prefill at the slot's reported rate, added to the base
    min_prefill_tps: float = 50.0  # a reported prefill rate below this counts as this
    assumed_prefill_tps: float = 200.0  # the rate of a slot that has not reported one yet
    first_token_timeout_s: float = 900.0  # the most any one attempt waits for its first token, however long the prompt
    first_token_total_s: float = 300.0  # no new attempt starts this long after the request arrived
    stall_timeout_s: float = 60.0  # between chunks that carry text, once the first token has arrived
    min_decode_tps: float = 2.0  # the stream's deadline allows max_tokens at this rate after the first token ...
    max_request_s: float = 3600.0  # ... and at most this long after the request arrived
    cancel_grace_s: float = 10.0  # a cancelled request still counts as the agent's until it says it ended
    # Admission runs on each agent's own numbers (its register and heartbeats, see agent_limits.py): none here.
    # pre-warming
    prewarm_free_fraction: float = 0.25  # load another provider when warm free KV falls below this share
    prewarm_queue_per_load: int = 8  # one more concurrent load for every this many queued requests
    prewarm_waiting_per_slot: int = 2  # ... or when warm slots average this many prompts waiting for prefill
    # A plan reads every provider of the model: from heartbeats (1,000 providers send 500 a second) it runs at
    # most this often per model; the heartbeats after it (one every few ms in such a fleet) run the next.
    prewarm_heartbeat_interval_s: float = 0.25
    # ... and at most this share of a core per model (0: no bound): a plan over 1,000 providers takes ~10 ms
    # here, so they run about once a second; requests queued within that are planned by the heartbeats after it
    # (a load takes seconds anyway), while a fleet whose plans are cheap plans for every queued request at once.
    prewarm_max_core_share: float = 0.01
    load_timeout_s: float = 600.0  # a load_model not visible as loading/idle by then is forgotten
    load_refused_cooldown_s: float = 60.0  # after an agent refused (or failed) a load, ask others first
    # usage (usage.py): what a provider's claim is bounded by
    usage_slack_tokens: int = 4  # tokens after the last text (EOS, a held-back stop) a claim may add to the count
    usage_textless_tokens: int = 32  # tokens a stream may count beyond one per byte of its text (channel markup)
    max_tool_calls: int = 64  # calls one response may carry (frames.MAX_TOOL_CALLS_PER_TURN is the wire's own bound)
    max_tool_argument_chars: int = 1024 * 1024  # one call's arguments, summed over its fragments
    max_choices: int = 8  # `n` per request: each choice is held, routed and billed as its own request (choices.py)
    # images (image_inputs.py, image_fetch.py): every image is decoded here before a hold, and sent inline
    max_images: int = 8  # image_url parts per request
    max_image_bytes: int = 5 * 1024 * 1024  # one image's encoded bytes, inline or fetched
    max_image_pixels: int = 16 * 1024 * 1024  # width × height from the image's header, before decoding it
    max_soft_tokens_per_image: int = 1120  # what a provider's image rule may claim per image (gemma-4's largest)
    image_fetch_timeout_s: float = 10.0  # an http(s) image, connect to last byte
    image_fetch_max_redirects: int = 3  # each hop is checked like the first
    # Networks an http(s) image may resolve into although private, loopback or link-local (CIDR strings);
    # empty: none, so a consumer cannot make the coordinator fetch from its own network.
    image_fetch_allowed_networks: tuple[str, ...] = ()
    # a model not in the catalog: the context assumed for its holds (billing/holds.py) and usage bound (usage.py)
    uncatalogued_context_tokens: int = 262_144
    # who sees per-provider detail in /v1/models/capacity and /metrics (privacy.py)
    operator_token: str | None = None  # sent as `x-darkbloom-operator`
    operator_on_loopback: bool = True  # a loopback client without proxy headers is the operator
    # billing (billing/holds.py): an account without a credit line holds the worst case
    min_capped_output_tokens: int = MIN_CAPPED_OUTPUT_TOKENS
    # open mode (no keys): a request-rate limit per client address (billing/client_ratelimit.py); None: none
    open_requests_per_minute_per_ip: int | None = DEFAULT_OPEN_REQUESTS_PER_MINUTE_PER_IP
    max_rate_limited_ips: int = MAX_RATE_LIMITED_CLIENTS  # addresses tracked; the least recently seen is forgotten
    # responses
    sse_keepalive_after_s: float = 10.0  # a stream still without its first token this long begins with comments ...
    sse_keepalive_interval_s: float = 10.0  # ... one this often, until the first token (or its error)
    reasoning_field: ReasoningField = "reasoning"
    # the ledger (billing/ledger.py): charges not yet written are kept, never dropped, up to this many
    ledger_max_backlog_entries: int = MAX_BACKLOG_ENTRIES  # past it, billed work gets 503 until the writer catches up
    ledger_retry_max_s: float = RETRY_MAX_S  # the longest wait between retries of a failed write (backoff doubles)
    # provider reputation and quarantine (routing/reputation.py); identities in billing/identities.py
    require_provider_identity: bool = False  # refuse the shared token even while no identity exists
    reputation_half_life_s: float = 600.0  # outcomes count half after this long
    num_trust_tiers: int = 4  # equal-row slots are ordered by trust in this many steps before their claimed KV
    proven_after_first_tokens: int = 4  # first tokens a provider must show before it may hold more requests
    unproven_max_in_flight: int = 4  # requests an unproven provider holds at once (a sinkhole costs this many)
    quarantine_after_failures: int = 3  # failures within the window that quarantine a provider
    quarantine_window_s: float = 60.0
    quarantine_s: float = 60.0  # the first quarantine; doubled on each repeat
    max_quarantine_s: float = 3600.0
    max_reputations: int = 4096  # providers whose reputation is kept (the least recently seen go first)
    reputation_save_interval_s: float = 10.0  # identities' reputations written to the accounts database

    @property
    def eviction_after_s(self) -> float:
        return self.heartbeat_interval_s * self.missed_heartbeats


def is_loopback_host(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
