"""Scrubbing what is logged costs time in a bounded prefix of each value, linear in it."""

from __future__ import annotations

import random
import re

from seawall._core.scrub import MAX_TEXT, SCRUBBED, Scrubber, _luhn


def test_a_long_value_is_cut_and_says_how_much_was_cut() -> None:
    # "111 " * 16000 cost ~120 ms (a Luhn check per candidate built as a
    # string) and was logged whole.
    out = Scrubber().text("111 " * 16000)
    assert len(out) <= MAX_TEXT + 40
    assert re.search(r"\.\.\.\[\+\d+ characters\]$", out)


def test_the_cut_never_leaves_part_of_a_card() -> None:
    card = "4111 1111 1111 1111"
    value = "x" * (MAX_TEXT - 8) + card + " and more"
    out = Scrubber().text(value)
    assert "4111" not in out
    assert out.startswith("x" * (MAX_TEXT - 8) + "...[+")


def test_unicode_digits_do_not_break_the_scan() -> None:
    assert Scrubber().text("\u0664\u0661\u0661\u0661" * 5 + " 4111 1111 1111 1111") == (
        "\u0664\u0661\u0661\u0661" * 5 + " " + SCRUBBED
    )


def _reference(text: str) -> str:
    """The card rule as written before the Luhn sums were added up per group."""

    def hide(match: re.Match[str]) -> str:
        run = match.group(0)
        whole = run.replace(" ", "").replace("-", "")
        if 13 <= len(whole) <= 19 and _luhn(whole):
            return SCRUBBED
        groups = [(g.start(), g.end(), g.group()) for g in re.finditer(r"\d+", run)]
        out: list[str] = []
        pos = i = 0
        while i < len(groups):
            found = -1
            first = groups[i][2]
            if 13 <= len(first) <= 19 and _luhn(first):
                found = i
            elif 3 <= len(first) <= 6:
                digits = first
                for j in range(i + 1, len(groups)):
                    part = groups[j][2]
                    if len(part) > 6 or len(digits) + len(part) > 19:
                        break
                    digits += part
                    if len(digits) >= 13 and _luhn(digits):
                        found = j
                    if len(part) < 3:
                        break
            if found < 0:
                i += 1
                continue
            out += [run[pos : groups[i][0]], SCRUBBED]
            pos = groups[found][1]
            i = found + 1
        return "".join([*out, run[pos:]]) if out else run

    return re.sub(r"(?<!\d)\d(?:[ -]?\d){12,}(?!\d)", hide, text)


def test_cards_are_found_as_before() -> None:
    rng = random.Random(7)
    scrubber = Scrubber()
    found = 0
    for _ in range(5000):
        sizes = [rng.choice([1, 2, 3, 4, 4, 4, 5, 6, 13, 16]) for _ in range(rng.randint(1, 8))]
        groups = ["".join(rng.choice("0123456789") for _ in range(n)) for n in sizes]
        value = " ".join(groups) + " x " + "-".join(reversed(groups))
        assert scrubber.text(value) == _reference(value), value
        found += SCRUBBED in value or SCRUBBED in scrubber.text(value)
    assert found > 100
