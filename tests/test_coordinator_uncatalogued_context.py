"""One setting, one meaning: the context a model not in the catalog is assumed to have, for its hold and its
usage bound alike."""

from __future__ import annotations

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.core import Coordinator
from agent.coordinator.flow import RequestFlow
from agent.coordinator.routing.exchange import Exchange
from agent.coordinator.routing.placement import Ask
from agent.coordinator.settings import CoordinatorSettings
from agent.wire.chat_body import ChatCompletionBody
from tests.provider_support import CATALOG, GPT

SETTINGS = CoordinatorSettings(uncatalogued_context_tokens=5_000)


def body(model: str, max_tokens: int | None = None) -> ChatCompletionBody:
    return ChatCompletionBody(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=max_tokens)


def test_a_model_not_in_the_catalog_holds_the_output_its_assumed_context_leaves():
    coordinator = Coordinator(Accounts.open(), SETTINGS, catalog=dict(CATALOG))
    assert coordinator.hold_output_tokens(body("somebody-elses-model"), prompt_floor_tokens=10) == 4_990
    assert coordinator.hold_output_tokens(body("somebody-elses-model", 100), prompt_floor_tokens=10) == 100


def test_a_catalog_model_holds_the_output_its_own_context_leaves_whatever_the_setting():
    coordinator = Coordinator(Accounts.open(), SETTINGS, catalog=dict(CATALOG))
    assert coordinator.hold_output_tokens(body(GPT.id), prompt_floor_tokens=10) == GPT.max_context - 10


def test_a_request_without_max_tokens_for_a_model_not_in_the_catalog_is_bounded_by_the_same_context():
    coordinator = Coordinator(Accounts.open(), SETTINGS, catalog={})
    exchange = Exchange("chatcmpl-1", body("somebody-elses-model"), Ask("somebody-elses-model", 20, 2, None),
                        created_at=0.0)
    flow = RequestFlow(coordinator.router, coordinator.accounts, exchange)
    assert flow.meter.max_tokens == SETTINGS.uncatalogued_context_tokens
