"""Numbers as the report prints them: plain, never in exponent notation (the SLO table, the plots' labels)."""

from __future__ import annotations

import math

DIGITS = 4  # significant digits, or more where the whole part has more: it is always printed in full
MAX_DECIMALS = 9  # below a nanosecond (or a billionth of a ratio) is nothing an SLO tells apart


def plain(value: float, signed: bool = False) -> str:
    """A number as a person reads it, never in exponent notation: "11,790", "0.00042", "-250,000", "+2.5".

    Every digit of the whole part with thousands separators, and decimals to DIGITS significant digits (at most
    MAX_DECIMALS), trailing zeros dropped. ``signed``: a "+" before a positive value or zero.
    """
    if not math.isfinite(value):
        return f"{value:+}" if signed and value > 0 else f"{value}"
    magnitude = math.floor(math.log10(abs(value))) if value else 0
    decimals = min(max(0, DIGITS - 1 - magnitude), MAX_DECIMALS)
    text = f"{value:{'+' if signed else ''},.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text.lstrip("+-") == "0":
        # A miss too small to print still shows its side; only an exact zero (-0.0 too) is on the limit.
        return "-0" if value < 0 else "+0" if signed else "0"
    return text
