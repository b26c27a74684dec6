"""Rounding money without running out of digits.

Running totals are stored with up to 38 digits (usage.models.MONEY_TOTAL), while Python's default decimal context
keeps 28: a quantize whose result needs more digits than its context raises InvalidOperation. Every rounding of a
money value or a percentage of one goes through `quantize`, with a context wide enough for any stored value and
for any number a query string may carry (64 characters at most: budgets.api._parse_limit).
"""

from decimal import ROUND_HALF_UP, Context, Decimal

MONEY_CONTEXT = Context(prec=100)


def quantize(value: Decimal, quantum: Decimal, *, rounding: str = ROUND_HALF_UP) -> Decimal:
    return value.quantize(quantum, rounding=rounding, context=MONEY_CONTEXT)
