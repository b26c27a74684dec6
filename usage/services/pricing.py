"""Cost of one event, fixed when it is recorded. Decimal only."""

from decimal import Decimal

from django.db.models import Q

from agentwatch_site.money import quantize
from tenants.models import Tenant
from usage.models import ModelPrice, UsageEvent

BLENDED_USD_PER_MTOK = Decimal("3")
MILLION = Decimal(1_000_000)
COST_QUANTUM = Decimal("0.0000000001")


def quantize_cost(value: Decimal) -> Decimal:
    return quantize(value, COST_QUANTUM)


def blended_cost(prompt_tokens: int, completion_tokens: int) -> Decimal:
    return quantize_cost(Decimal(prompt_tokens + completion_tokens) * BLENDED_USD_PER_MTOK / MILLION)


def catalog_cost(prompt_tokens: int, completion_tokens: int, price: ModelPrice) -> Decimal:
    return quantize_cost(
        (Decimal(prompt_tokens) * price.input_per_mtok + Decimal(completion_tokens) * price.output_per_mtok)
        / MILLION
    )


def price_table(*, tenant: Tenant, models: set[str]) -> dict[str, ModelPrice]:
    """model → price for the given models: the tenant's overrides over the global catalogue."""
    table: dict[str, ModelPrice] = {}
    rows = ModelPrice.objects.filter(Q(tenant=tenant) | Q(tenant__isnull=True), model__in=models)
    for row in sorted(rows, key=lambda r: r.tenant_id is not None):  # global first, overrides win
        table[row.model] = row
    return table


def event_cost(event: UsageEvent, *, cost_mode: str, prices: dict[str, ModelPrice]) -> tuple[Decimal, str]:
    """(cost, priced_by) under the tenant's cost mode; an unknown model in catalog mode falls back to blended."""
    if cost_mode == Tenant.CostMode.CATALOG:
        price = prices.get(event.model)
        if price is not None:
            return catalog_cost(event.prompt_tokens, event.completion_tokens, price), UsageEvent.PricedBy.CATALOG
        return blended_cost(event.prompt_tokens, event.completion_tokens), UsageEvent.PricedBy.FALLBACK
    return blended_cost(event.prompt_tokens, event.completion_tokens), UsageEvent.PricedBy.BLENDED


def price_override_set(*, tenant: Tenant, model: str, input_per_mtok: Decimal, output_per_mtok: Decimal,
                       provider: str = "") -> ModelPrice:
    """The tenant's own price for `model` (over the global catalogue); applies to events recorded from now on."""
    price, _ = ModelPrice.objects.update_or_create(
        tenant=tenant, model=model,
        defaults={"input_per_mtok": input_per_mtok, "output_per_mtok": output_per_mtok, "provider": provider},
    )
    return price


def price_override_delete(*, price: ModelPrice) -> None:
    if price.tenant_id is not None:
        price.delete()
