"""recorder.messages.one_line: the one helper that replaced six copies, each behaviour kept."""
from recorder.messages import one_line


def test_collapses_whitespace_across_lines():
    assert one_line(ValueError("bad  value\n  in line two\tand\tthree")) == "bad value in line two and three"


def test_empty_message_gives_the_type_name():
    assert one_line(KeyError()) == "KeyError"
    assert one_line(RuntimeError("  \n ")) == "RuntimeError"
    assert one_line(RuntimeError(" \n "), first_line=True) == "RuntimeError"
    assert one_line("") == ""  # a plain string has no type to fall back on


def test_first_line_keeps_the_summary_unchanged():
    exc = OSError("\n  cannot open  device\ntraceback line\nmore")
    assert one_line(exc, first_line=True) == "cannot open  device"


def test_limit_cuts_long_vendor_messages():
    assert one_line(RuntimeError("x" * 199), limit=200) == "x" * 199
    cut = one_line(RuntimeError("x" * 200), limit=200)
    assert cut == "x" * 197 + "..." and len(cut) == 200
