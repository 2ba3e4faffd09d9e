"""What the CLI prints from data cannot drive the operator's terminal."""

from __future__ import annotations

from arbitrage.cli.terminal import printable, printable_lines, table


def test_control_characters_are_escaped() -> None:
    assert printable("a\x1b[2Jb\rc\td\ne") == "a\\x1b[2Jb\\rc\\td\\ne"
    assert printable("\x00\x07\x7f\x9b\x85") == "\\x00\\x07\\x7f\\x9b\\x85"  # C0, DEL, C1
    assert printable("abc\u202edef\u2066\u2028") == "abc\\u202edef\\u2066\\u2028"  # bidi, LS


def test_ordinary_text_is_kept() -> None:
    text = "Kaffeemühle – 50 % 咖啡 ☕ Ü"
    assert printable(text) == text
    assert printable(None) == "None" and printable(12) == "12"


def test_tables_and_blocks_escape_each_cell_keep_their_own_lines() -> None:
    shown = table(["ASIN", "TITLE"], [["B0\x1b]0;owned\x07", "x\ry"]])
    cell = "B0\\x1b]0;owned\\x07"  # the columns are as wide as the escaped text
    assert shown.splitlines() == [f"{'ASIN':<{len(cell)}}  TITLE", f"{cell}  x\\ry"]
    assert printable_lines("head\n\x1b[31mred") == "head\n\\x1b[31mred"
