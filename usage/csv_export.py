"""What both CSV downloads share (Activity's export and the API's chargeback): lines streamed one by one, and
text cells that a spreadsheet will not run as formulas."""

import csv
import datetime
from collections.abc import Iterable, Iterator
from decimal import Decimal

# A cell starting with one of these would run as a formula in a spreadsheet (CSV injection); team, project and
# model names arrive from any telemetry key.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class _Echo:
    """csv.writer target that hands back each line instead of buffering it."""

    def write(self, value):
        return value


def csv_lines(rows: Iterable[Iterable]) -> Iterator[str]:
    """Each row as one CSV line (for a StreamingHttpResponse)."""
    writer = csv.writer(_Echo())
    for row in rows:
        yield writer.writerow(row)


def csv_text(value: str) -> str:
    """Free text, quoted with a leading apostrophe when a spreadsheet would read it as a formula."""
    return f"'{value}" if value[:1] in _FORMULA_STARTS else value


def csv_cell(value) -> str:
    """Any value: Decimals in plain digits at stored precision (never 1E-7), dates in ISO form, text made safe."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, str):
        return csv_text(value)
    return "" if value is None else str(value)
