"""What model usage costs, by a price table in USD per 1M tokens."""

from __future__ import annotations

import pytest
from runplane.domain.models import ModelUsage, Outcome
from runplane.domain.pricing import DEFAULT_PRICES, ModelPrice, priced, usage_cost
from runplane.domain.states import Status
from runplane.settings import Settings

PRICES = {"m": ModelPrice(input=3, output=15, cached=0.3), "plain": ModelPrice(input=2, output=8)}


def usage(model: str, prompt: int, completion: int, cached: int = 0) -> ModelUsage:
    return ModelUsage(
        provider="p", model=model, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached
    )


def test_cached_input_is_billed_at_the_cached_price_and_the_rest_at_the_input_price() -> None:
    # (1000 - 400) x 3 + 400 x 0.3 + 500 x 15 = 1800 + 120 + 7500 = 9420 per 1M
    assert usage_cost(usage("m", 1000, 500, cached=400), PRICES) == pytest.approx(0.00942)


def test_without_a_cached_price_cached_tokens_cost_the_input_price() -> None:
    assert usage_cost(usage("plain", 1000, 0, cached=400), PRICES) == pytest.approx(0.002)


def test_an_inference_profile_costs_what_its_model_costs() -> None:
    profile = usage("us.amazon.nova-lite-v1:0", 1_000_000, 0)
    assert usage_cost(profile, DEFAULT_PRICES) == DEFAULT_PRICES["amazon.nova-lite-v1:0"].input


def test_an_unknown_model_makes_the_total_unknown_not_zero() -> None:
    outcome = priced(
        Outcome(status=Status.completed, usage=[usage("m", 1000, 0), usage("mystery", 5, 5)]), PRICES
    )
    assert outcome.cost_usd is None
    assert outcome.usage_costs == [pytest.approx(0.003), None]


def test_a_run_without_usage_cost_nothing() -> None:
    assert priced(Outcome(status=Status.completed), PRICES).cost_usd == 0


def test_a_deployment_adds_and_overrides_prices() -> None:
    settings = Settings.from_env(
        {
            "RUNPLANE_MODEL_PRICES": '{"gpt-4o": {"input": 1, "output": 2}, "house": {"input": 0.5, "output": 1}}'
        }
    )
    assert settings.prices["gpt-4o"] == ModelPrice(input=1, output=2)
    assert settings.prices["house"].input == 0.5
    assert settings.prices["amazon.nova-pro-v1:0"] == DEFAULT_PRICES["amazon.nova-pro-v1:0"]
