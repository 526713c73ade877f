"""``human_number``: Ollama's format.HumanNumber test table (format/format_test.go), plus edges."""

from __future__ import annotations

import pytest

from converters.common import human_number


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        # Ollama's TestHumanNumber, verbatim.
        (0, "0"),
        (999, "999"),
        (1000, "1K"),
        (1001, "1K"),
        (1000000, "1M"),
        (125000000, "125M"),
        (500500000, "500.50M"),
        (500550000, "500.55M"),
        (1000000000, "1B"),
        (2800000000, "2.8B"),
        (2850000000, "2.9B"),
        (1000000000000, "1000B"),
        # Ours: the real models, and Go's rounding (half-to-even on the exact binary value).
        (134515008, "134.52M"),
        (8030261248, "8.0B"),
        (1500, "2K"),
        (2500, "2K"),
        (999999999, "1000.00M"),
    ],
)
def test_human_number(n: int, expected: str) -> None:
    assert human_number(n) == expected


def test_negative_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        human_number(-1)
