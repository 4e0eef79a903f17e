"""Money precision, defined once. Every rounding of a dollar amount goes through `quantize_usd`."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

# NUMERIC(20,10): per-request costs. NUMERIC(12,6): prices per 1M tokens. NUMERIC(14,2): caps.
COST_MAX_DIGITS, COST_DECIMAL_PLACES = 20, 10
PRICE_MAX_DIGITS, PRICE_DECIMAL_PLACES = 12, 6
CAP_MAX_DIGITS, CAP_DECIMAL_PLACES = 14, 2

COST_QUANTUM = Decimal(1).scaleb(-COST_DECIMAL_PLACES)
CAP_QUANTUM = Decimal(1).scaleb(-CAP_DECIMAL_PLACES)
ZERO = Decimal("0").quantize(COST_QUANTUM)
TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)


def quantize_usd(amount: Decimal, *, places: int = COST_DECIMAL_PLACES) -> Decimal:
    """Banker's rounding to `places` decimals: unbiased when summed over millions of rows."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"money must be Decimal, not {type(amount).__name__}")
    return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


def usd_str(amount: Decimal) -> str:
    """A cost as a header/JSON string: exact, without exponent notation."""
    return format(quantize_usd(amount), "f")
