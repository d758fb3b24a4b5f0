from hypothesis import given
from hypothesis import strategies as st

from vfstream.cli.render import printable, table


def test_escapes_and_bidi_controls_are_shown_not_obeyed() -> None:
    shown = printable("a\x1b[31mred\x07\u202eevil\r\nline")

    assert shown == "a\\x1b[31mred\\x07\\u202eevil\\r\\nline"


@given(st.text())
def test_printable_text_has_no_control_characters(text: str) -> None:
    shown = printable(text)

    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert "\u202e" not in shown and "\u2028" not in shown


def test_long_values_are_cut_with_an_ellipsis() -> None:
    assert printable("x" * 50, 10) == "x" * 9 + "…"
    assert printable(None) == ""


def test_numbers_align_right_under_their_header() -> None:
    lines = table(("name", "count"), [("a", "1"), ("b", "1,000")], right=(1,)).splitlines()

    assert lines[0].split("|")[1].strip() == "count"
    assert lines[2].endswith("     1 ") and lines[3].endswith(" 1,000 ")
