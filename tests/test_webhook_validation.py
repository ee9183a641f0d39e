"""The webhook's plain-body validation (api/payments.py `plain_envelope`, `plain_payment_data`) agrees
with the serializers it stands in for: whatever it accepts, the serializer accepts with the same
validated data (same types, same Decimal digits); everything else is left to the serializer."""

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.payments import (
    PaymentDataSerializer,
    ProviderEventEnvelopeSerializer,
    plain_envelope,
    plain_payment_data,
)
from config.payment_provider import payment_body

BIGINT = 2**63 - 1

texts = st.one_of(
    st.sampled_from(["pay_1", "evt_1", "payment.succeeded", "EUR", "eur", "€UR", " pay", "pay ", "\tx", "x\n", ""]),
    st.sampled_from(["a\x00b", "\ud83d", "\u00a0pay", "pay\u2028"]),
    st.sampled_from(["x" * 63, "x" * 64, "x" * 65, "x" * 127, "x" * 128, "x" * 129]),
    st.text(max_size=140),
    st.text(alphabet="abcEURx _.\u00a0\x00\ud800", max_size=6),
)
currencies = st.one_of(
    st.sampled_from(["EUR", "eur", "EURO", "EU", "E1R", "EUR\n", " EUR", "ÉUR", "EU\u0000"]),
    st.text(alphabet="EUr1é \n", max_size=5),
    texts,
)
ints = st.one_of(
    st.sampled_from([0, 1, -1, BIGINT, BIGINT + 1, True, False, 1.0, 2.5, "1", "12", " 1", "1.0", "²"]),
    st.integers(),
    st.integers(min_value=-3, max_value=3),
)
amounts = st.one_of(
    st.sampled_from(["240.00", "240", "0", "0.00", "-0", "-5", "7.5", "00000007.5", "12345678.99", "123456789"]),
    st.sampled_from(["1.005", "1e2", "NaN", "Infinity", " 1.00", "1.00 ", "١٢", "1_000", ".5", "5.", "+5"]),
    st.sampled_from([Decimal("240.00"), Decimal("1E+2"), 240, 240.5, True, None]),
    st.from_regex(r"-?[0-9]{0,10}(\.[0-9]{0,3})?", fullmatch=True),
    st.decimals(allow_nan=True, allow_infinity=True, places=None).map(str),
)
anything = st.one_of(
    st.none(), st.booleans(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(), st.integers())
)


MISSING = object()
PAYMENT_DATA = {"payment_id": "pay_1", "student_id": 7, "course_id": 3, "amount": "240.00", "currency": "EUR"}
PAYMENT_FIELDS = {"payment_id": texts, "student_id": ints, "course_id": ints, "amount": amounts, "currency": currencies}
ENVELOPE = {"id": "evt_1", "type": "payment.succeeded", "created": 1_700_000_000, "data": PAYMENT_DATA}
ENVELOPE_FIELDS = {
    "id": texts,
    "type": texts,
    "created": ints,
    "data": st.dictionaries(st.text(max_size=3), st.one_of(st.integers(), st.text(max_size=3)), max_size=3),
}


def variants(base: dict[str, Any], fields: dict[str, st.SearchStrategy[Any]], name: str) -> st.SearchStrategy[Any]:
    """`base` with field `name` replaced (by a value of its kind, or any other) or removed, sometimes
    one more field too, and sometimes an extra key: most variants differ from a plain body in one place."""

    def change(field: str) -> st.SearchStrategy[tuple[str, Any]]:
        return st.tuples(st.just(field), st.one_of(fields[field], fields[field], anything, st.just(MISSING)))

    def apply(changes: list[tuple[str, Any]], extra: Any) -> dict[str, Any]:
        value = dict(base)
        for field, new in changes:
            if new is MISSING:
                value.pop(field, None)
            else:
                value[field] = new
        if extra is not MISSING:
            value["extra"] = extra
        return value

    more = st.lists(st.sampled_from(sorted(fields)).flatmap(change), max_size=1)
    return st.builds(
        apply, st.tuples(change(name), more).map(lambda c: [c[0], *c[1]]), st.one_of(st.just(MISSING), anything)
    )


def serializer_result(serializer_class: type[Any], value: Any) -> dict[str, Any] | None:
    serializer = serializer_class(data=value)
    return dict(serializer.validated_data) if serializer.is_valid() else None


def same(plain: dict[str, Any], validated: dict[str, Any] | None) -> None:
    assert validated is not None, f"accepted what the serializer refuses: {plain!r}"
    assert [(k, type(v), repr(v)) for k, v in plain.items()] == [(k, type(v), repr(v)) for k, v in validated.items()]


@pytest.mark.parametrize("name", sorted(PAYMENT_FIELDS))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_plain_payment_data_is_what_the_serializer_validates(name: str, data: st.DataObject) -> None:
    value = data.draw(variants(PAYMENT_DATA, PAYMENT_FIELDS, name))
    plain = plain_payment_data(value)
    if plain is not None:
        same(plain, serializer_result(PaymentDataSerializer, value))


@pytest.mark.parametrize("name", sorted(ENVELOPE_FIELDS))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_plain_envelope_is_what_the_serializer_validates(name: str, data: st.DataObject) -> None:
    value = data.draw(variants(ENVELOPE, ENVELOPE_FIELDS, name))
    plain = plain_envelope(value)
    if plain is not None:
        same(plain, serializer_result(ProviderEventEnvelopeSerializer, value))


TEXT_EDGES: list[Any] = [
    "",
    " ",
    "x",
    " x",
    "x ",
    "x\n",
    "\u00a0x",
    "x\u2028",
    "a\x00b",
    "\ud83d",
    "é",
    "x" * 63,
    "x" * 64,
]
TEXT_EDGES += ["x" * 65, "x" * 127, "x" * 128, "x" * 129, 1, 1.5, True, None, [], {}]
INT_EDGES: list[Any] = [-1, 0, 1, 2, BIGINT - 1, BIGINT, BIGINT + 1, True, False, 1.0, "1", " 1", "1.0", "²", None, []]
EDGES: dict[str, list[Any]] = {
    "payment_id": TEXT_EDGES,
    "student_id": INT_EDGES,
    "course_id": INT_EDGES,
    "amount": [
        *["0", "0.0", "0.00", "0.000", "-0", "-0.01", "1", "1.5", "1.50", "1.505", "12345678", "12345678.99"],
        *["123456789", "123456789.9", "00000001.5", "000000001", "1e2", "1E2", " 1", "1 ", "+1", ".5", "5."],
        *["\u0661", "NaN", "Infinity", Decimal("1.5"), 1, 1.5, True, None],  # U+0661: an Arabic-Indic digit
    ],
    # U+FF25 U+FF35 U+FF32: "EUR" in full-width letters, which are letters but not [A-Za-z]
    "currency": [
        "EUR",
        "eur",
        "EuR",
        "EU",
        "EURO",
        "E1R",
        "EUR\n",
        " EUR",
        "\u00c9UR",
        "\uff25\uff35\uff32",
        "",
        978,
        None,
    ],
}
ENVELOPE_EDGES: dict[str, list[Any]] = {
    "id": TEXT_EDGES,
    "type": TEXT_EDGES,
    "created": INT_EDGES,
    "data": [{}, {"a": 1}, [], "x", None],
}


@pytest.mark.parametrize(("name", "edge"), [(n, v) for n, values in EDGES.items() for v in values])
def test_plain_payment_data_agrees_on_the_edges(name: str, edge: Any) -> None:
    value = {**PAYMENT_DATA, name: edge}
    plain = plain_payment_data(value)
    if plain is not None:
        same(plain, serializer_result(PaymentDataSerializer, value))


@pytest.mark.parametrize(("name", "edge"), [(n, v) for n, values in ENVELOPE_EDGES.items() for v in values])
def test_plain_envelope_agrees_on_the_edges(name: str, edge: Any) -> None:
    value = {**ENVELOPE, name: edge}
    plain = plain_envelope(value)
    if plain is not None:
        same(plain, serializer_result(ProviderEventEnvelopeSerializer, value))


def test_the_body_the_provider_sends_is_plain() -> None:
    """The fast path is taken for the provider's own bodies (else the webhook pays for the serializers)."""
    body = json.loads(payment_body(payment_id="pay_1", student_id=7, course_id=3), parse_float=Decimal)
    envelope = plain_envelope(body)
    assert envelope is not None
    data = plain_payment_data(envelope["data"])
    assert data == {
        "payment_id": "pay_1",
        "student_id": 7,
        "course_id": 3,
        "amount": Decimal("240.00"),
        "currency": "EUR",
    }
    same(data, serializer_result(PaymentDataSerializer, envelope["data"]))
