"""The scrubber on generated data: no secret survives, the input is never changed."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from seawall._core.scrub import SCRUBBED, Scrubber

MARK = "s3cr3t-MARK"


def luhn_complete(body: str) -> str:
    """*body* with the check digit that makes it pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        n = int(ch)
        if i % 2 == 0:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return body + str((10 - total % 10) % 10)


cards = st.builds(
    luhn_complete,
    st.integers(min_value=12, max_value=18).flatmap(
        lambda n: st.from_regex(rf"[1-9][0-9]{{{n - 1}}}", fullmatch=True)
    ),
)

secret_keys = st.sampled_from(
    [
        *("password", "Password", "user_password", "passwd", "api_key", "X-Api-Key"),
        *("token", "refresh_token", "client_secret", "sessionid", "cardNumber"),
        *("cvv", "ssn", "Authorization"),
    ]
)
plain_keys = st.sampled_from(["name", "id", "items", "note", "amount", "data", "q", "page"])

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-1000, max_value=1000),
    st.text(alphabet="abc xyz-", max_size=12),
    # A card number, as a string (maybe spaced, inside text) or a number.
    cards,
    cards.map(lambda c: " ".join(c[i : i + 4] for i in range(0, len(c), 4))),
    cards.map(lambda c: f"paid with {c} today"),
    cards.map(int),
)


def documents() -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(plain_keys, inner, max_size=4),
            # A secret key hides its whole value, whatever it holds.
            st.tuples(secret_keys, inner, st.dictionaries(plain_keys, inner, max_size=3)).map(
                lambda t: {t[0]: [MARK, t[1]], **t[2]}
            ),
        ),
        max_leaves=25,
    )


def card_numbers(value: Any) -> list[str]:
    """Every card number the generated *value* holds (as digits)."""
    found: list[str] = []
    if isinstance(value, dict):
        for v in value.values():
            found += card_numbers(v)
    elif isinstance(value, list):
        for v in value:
            found += card_numbers(v)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**12:
        found.append(str(value))
    elif isinstance(value, str):
        digits = "".join(ch for ch in value if ch.isdigit())
        if len(digits) >= 13:
            found.append(digits)
    return found


@given(doc=documents())
def test_no_secret_survives_and_the_input_is_unchanged(doc: Any) -> None:
    before = copy.deepcopy(doc)
    scrubbed = Scrubber().data(doc)
    assert doc == before
    out = json.dumps(scrubbed)
    assert MARK not in out
    flat = "".join(ch for ch in out if ch.isdigit() or ch == '"')
    for card in card_numbers(doc):
        assert card not in flat.replace('"', ""), (card, out)


@given(doc=documents())
def test_a_json_body_is_scrubbed_like_the_data(doc: Any) -> None:
    body = json.dumps(doc).encode()
    assert Scrubber().body(body, "application/json") == Scrubber().data(json.loads(body))
    assert MARK not in json.dumps(Scrubber().body(body, "application/json"))


@given(
    pairs=st.lists(
        st.one_of(
            st.tuples(secret_keys, st.just(MARK)),
            st.tuples(plain_keys, st.text(alphabet="abc ", max_size=8)),
            st.tuples(plain_keys, cards),
        ),
        max_size=8,
    )
)
def test_query_and_form_pairs(pairs: list[tuple[str, str]]) -> None:
    from urllib.parse import urlencode

    encoded = urlencode(pairs)
    for scrubbed in (
        Scrubber().query(encoded),
        Scrubber().body(encoded.encode(), "application/x-www-form-urlencoded") or {},
    ):
        out = json.dumps(scrubbed)
        assert MARK not in out
        for key, value in pairs:
            if value == MARK:
                assert SCRUBBED in json.dumps(scrubbed[key])
            elif value.isdigit() and len(value) >= 13:
                assert value not in out
