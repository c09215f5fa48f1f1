"""Token prices and what a run's model usage cost. Pure functions, no I/O.

Prices are USD per 1M tokens. `prompt_tokens` counts every input token, `cached_tokens` the part of them
read from a prompt cache: those are billed at the cached price, the rest at the input price.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from runplane.domain.models import ModelUsage, Outcome, UsageTotals


class ModelPrice(BaseModel):
    input: float = Field(ge=0, description="USD per 1M uncached input tokens")
    output: float = Field(ge=0, description="USD per 1M output tokens")
    cached: float | None = Field(None, ge=0, description="USD per 1M cached input tokens (default: input)")


# List prices of common models; a deployment adds or overrides entries with RUNPLANE_MODEL_PRICES.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    name: ModelPrice(input=i, output=o, cached=c)
    for name, (i, o, c) in {
        "gpt-4o": (2.50, 10.00, 1.25),
        "gpt-4o-mini": (0.15, 0.60, 0.075),
        "gpt-4.1": (2.00, 8.00, 0.50),
        "gpt-4.1-mini": (0.40, 1.60, 0.10),
        "claude-3-5-haiku-20241022": (0.80, 4.00, 0.08),
        "claude-3-7-sonnet-20250219": (3.00, 15.00, 0.30),
        "claude-sonnet-4-20250514": (3.00, 15.00, 0.30),
        "anthropic.claude-3-haiku-20240307-v1:0": (0.25, 1.25, 0.03),
        "anthropic.claude-3-5-haiku-20241022-v1:0": (0.80, 4.00, 0.08),
        "anthropic.claude-3-7-sonnet-20250219-v1:0": (3.00, 15.00, 0.30),
        "anthropic.claude-sonnet-4-20250514-v1:0": (3.00, 15.00, 0.30),
        "amazon.nova-micro-v1:0": (0.035, 0.14, 0.00875),
        "amazon.nova-lite-v1:0": (0.06, 0.24, 0.015),
        "amazon.nova-pro-v1:0": (0.80, 3.20, 0.20),
    }.items()
}

# Bedrock cross-region inference profiles name a model with a geography prefix: us.amazon.nova-lite-v1:0
INFERENCE_PROFILE = re.compile(r"^(?:us|eu|apac|us-gov|global)\.(?=[a-z0-9-]+\.)")


def price_for(model: str, prices: dict[str, ModelPrice]) -> ModelPrice | None:
    return prices.get(model) or prices.get(INFERENCE_PROFILE.sub("", model, count=1))


def usage_cost(usage: ModelUsage, prices: dict[str, ModelPrice]) -> float | None:
    """USD for one usage entry; None when the model has no price."""
    price = price_for(usage.model, prices)
    if price is None:
        return None
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_price = price.input if price.cached is None else price.cached
    return (
        (usage.prompt_tokens - cached) * price.input
        + cached * cached_price
        + usage.completion_tokens * price.output
    ) / 1_000_000


def priced(outcome: Outcome, prices: dict[str, ModelPrice]) -> Outcome:
    """The outcome with the cost of each usage entry, and the total when every entry had a price."""
    costs = [usage_cost(u, prices) for u in outcome.usage]
    known = [c for c in costs if c is not None]
    total = sum(known) if len(known) == len(costs) else None
    return outcome.model_copy(update={"usage_costs": costs, "cost_usd": total})


def add_up(totals: UsageTotals, outcome: Outcome) -> None:
    """Add an outcome's usage and priced cost to `totals`."""
    totals.total_input_tokens += sum(u.prompt_tokens for u in outcome.usage)
    totals.total_output_tokens += sum(u.completion_tokens for u in outcome.usage)
    totals.total_cached_tokens += sum(u.cached_tokens for u in outcome.usage)
    totals.total_token_cost_usd += sum(c for c in outcome.usage_costs if c is not None)
    totals.unpriced_usage += sum(1 for c in outcome.usage_costs if c is None)
