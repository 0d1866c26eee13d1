"""Prices are integers: micro-units per million tokens, a request's cost rounded up once."""

from __future__ import annotations

import pytest

from agent.coordinator.billing.pricing import (
    DEFAULT_PRICES,
    InvalidAmount,
    ModelPrice,
    PriceTable,
    format_micros,
    parse_amount,
)


def test_a_cost_is_prompt_times_input_price_plus_output_times_output_price_rounded_up():
    price = ModelPrice(input_micros_per_mtok=50_000, output_micros_per_mtok=200_000)
    assert price.cost_micros(1_000_000, 1_000_000) == 250_000
    assert price.cost_micros(200, 359) == 82  # 10 + 71.8, rounded up
    assert price.cost_micros(0, 0) == 0


def test_an_unlisted_model_costs_the_default_price():
    assert DEFAULT_PRICES.price("some-new-model") == DEFAULT_PRICES.default
    assert DEFAULT_PRICES.price("gpt-oss-20b") != DEFAULT_PRICES.default


def test_the_free_table_charges_nothing_for_any_model():
    free = PriceTable.free()
    assert free.is_free and not DEFAULT_PRICES.is_free
    assert free.cost_micros("gemma-4-26b", 10**6, 10**6) == 0


def test_amounts_parse_and_format_exactly_without_floats():
    assert parse_amount("12.50") == 12_500_000
    assert parse_amount("0.000001") == 1
    assert format_micros(12_500_000) == "12.500000" and format_micros(-1) == "-0.000001"


@pytest.mark.parametrize("text", ["abc", "0.0000001", "inf", "nan"])
def test_an_amount_that_is_not_exact_money_is_refused(text):
    with pytest.raises(InvalidAmount) as refused:
        parse_amount(text)
    assert refused.value.code == "invalid_amount"
