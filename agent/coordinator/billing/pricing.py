"""What a request costs, in integer micro-units (1 µ = 10⁻⁶ of the account currency, USD by default).

    cost_micros = ceil((uncached · input_price + cached · cached_input_price + output_tokens · output_price)
                       / 1,000,000)

where `cached` are the prompt tokens the provider served from its prefix cache (never more than the
prompt) and `cached_input_price` defaults to the input price; it may be lower, never higher, so a
hold taken at the full input price always covers the charge.

with prices in micro-units per million tokens, so $0.20 per million output tokens is 200_000. No
floats touch money: a float cannot hold 0.1 exactly, and a ledger summing millions of them drifts.
Rounding up once per request keeps the house from losing fractions of a micro-unit to truncation.

Public names: MICROS_PER_UNIT, ModelPrice, PriceTable, DEFAULT_PRICES, format_micros, parse_amount.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.errors import DarkbloomError

MICROS_PER_UNIT = 1_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are per million tokens


class InvalidAmount(DarkbloomError):
    code = "invalid_amount"


class ModelPrice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    input_micros_per_mtok: int = Field(ge=0)
    output_micros_per_mtok: int = Field(ge=0)
    cached_input_micros_per_mtok: int | None = Field(None, ge=0)  # None: as input_micros_per_mtok

    @model_validator(mode="after")
    def _cached_not_dearer(self) -> ModelPrice:
        if self.cached_input_micros_per_mtok is not None and self.cached_input_micros_per_mtok > self.input_micros_per_mtok:
            raise ValueError("cached_input_micros_per_mtok may not exceed input_micros_per_mtok (holds are taken at "
                             "the input price)")
        return self

    def cost_micros(self, prompt_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_price = self.input_micros_per_mtok if self.cached_input_micros_per_mtok is None \
            else self.cached_input_micros_per_mtok
        scaled = ((prompt_tokens - cached) * self.input_micros_per_mtok + cached * cached_price
                  + output_tokens * self.output_micros_per_mtok)
        return -(-scaled // TOKENS_PER_PRICE_UNIT)


FREE = ModelPrice(input_micros_per_mtok=0, output_micros_per_mtok=0)


class PriceTable(BaseModel):
    """Per-model prices; a model not listed costs `default`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: dict[str, ModelPrice] = Field(default_factory=dict)
    default: ModelPrice = FREE

    @classmethod
    def free(cls) -> PriceTable:
        return cls()

    @property
    def is_free(self) -> bool:
        return self.default == FREE and all(price == FREE for price in self.models.values())

    def price(self, model: str) -> ModelPrice:
        return self.models.get(model, self.default)

    def cost_micros(self, model: str, prompt_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        return self.price(model).cost_micros(prompt_tokens, output_tokens, cached_tokens)

    @property
    def cheapest_request_micros(self) -> int:
        """What the cheapest request can cost (one prompt token, one output token, the cheapest model)."""
        return min(price.cost_micros(1, 1) for price in (self.default, *self.models.values()))


# In the range public hosts charge for these open-weight models (USD per million tokens: gpt-oss-20b
# $0.05 in / $0.20 out, gemma-4-26b $0.10 / $0.40); an unknown model is priced like the dearer one.
DEFAULT_PRICES = PriceTable(
    models={
        "gpt-oss-20b": ModelPrice(input_micros_per_mtok=50_000, output_micros_per_mtok=200_000),
        "gemma-4-26b": ModelPrice(input_micros_per_mtok=100_000, output_micros_per_mtok=400_000),
    },
    default=ModelPrice(input_micros_per_mtok=100_000, output_micros_per_mtok=400_000),
)


def format_micros(amount_micros: int) -> str:
    """12_345_678 -> '12.345678' (exact; the sign is kept)."""
    sign = "-" if amount_micros < 0 else ""
    whole, frac = divmod(abs(amount_micros), MICROS_PER_UNIT)
    return f"{sign}{whole}.{frac:06d}"


def parse_amount(text: str) -> int:
    """'12.50' -> 12_500_000 micro-units; refuses more than six decimals rather than rounding money."""
    try:
        value = Decimal(text.strip()) * MICROS_PER_UNIT
    except InvalidOperation:
        raise InvalidAmount(f"{text!r} is not an amount: write it like 12.50") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise InvalidAmount(f"{text!r} has more than six decimals (the ledger counts micro-units)")
    return int(value)
