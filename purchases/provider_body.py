"""The payment provider's request body: strict RFC 8259 parsing, and a copy that jsonb can hold.

The exact bytes are the record (`ProviderEvent.raw_body`); the parsed value drives validation; the
jsonb copy (`ProviderEvent.payload`) is for querying and reading, and differs from the bytes only
where PostgreSQL cannot store a value:

- a string holding U+0000 or a lone surrogate (`"\\ud83d"`): such characters are kept as their
  escape text (`\\u0000`, `\\ud83d`);
- a number outside a float's range or precision worth keeping (`1e400`, `1e-400`, integers of more
  than 4000 digits): kept as the number's text in a string.
"""

import json
import math
import re
from decimal import Decimal
from typing import Any

# Objects and arrays may nest this deep (the documented body has 2 levels). Deeper bodies are
# refused before parsing, so no parser recursion depends on what a client sends.
MAX_DEPTH = 32
# Python refuses to turn longer digit strings into int (CVE-2020-10735); keep them as Decimal.
_MAX_INT_DIGITS = 4000
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


class MalformedBody(Exception):
    pass


def parse(body: bytes) -> Any:
    """The JSON value of `body`, which must be UTF-8 RFC 8259 JSON nested at most `MAX_DEPTH` deep.

    Numbers with a fraction or exponent parse as `Decimal` (exact), integers as `int` (or `Decimal`
    past 4000 digits). `NaN`, `Infinity`, trailing bytes, a BOM or invalid UTF-8 raise `MalformedBody`.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody("Body is not UTF-8.") from exc
    if depth(text) > MAX_DEPTH:
        raise MalformedBody(f"Body nests deeper than {MAX_DEPTH} levels.")
    try:
        return json.loads(text, parse_float=Decimal, parse_int=_int, parse_constant=_refuse_constant)
    except ValueError as exc:  # JSONDecodeError, and _refuse_constant's
        raise MalformedBody("Body is not valid JSON (RFC 8259).") from exc


def depth(text: str) -> int:
    """The deepest nesting of objects and arrays in JSON text, ignoring brackets inside strings."""
    deepest = level = 0
    for char in _STRING.sub("", text):
        if char in "[{":
            level += 1
            deepest = max(deepest, level)
        elif char in "]}":
            level -= 1
    return deepest


def storable(value: Any) -> Any:
    """`value` with what jsonb cannot hold replaced by its text (see the module docstring)."""
    if isinstance(value, str):
        return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, Decimal):
        as_float = float(value)
        if math.isfinite(as_float) and (as_float != 0 or value == 0):
            return as_float
        return str(value)
    return value


def _int(text: str) -> int | Decimal:
    return int(text) if len(text.lstrip("-")) <= _MAX_INT_DIGITS else Decimal(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
