"""The action registry (app/actions.py) without widgets: unique names, a default table without
conflicts, overrides that persist and that are refused when they collide, the generated key table."""
from __future__ import annotations

from pathlib import Path

import pytest

from app import actions
from app.actions import (
    ACTIONS,
    CONTEXT_TITLES,
    OVERRIDES_KEY,
    Keymap,
    ShortcutError,
    canonical_key,
)
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_names_are_unique_prefixed_and_every_action_is_complete():
    names = [a.name for a in ACTIONS]
    assert len(names) == len(set(names))
    for a in ACTIONS:
        assert a.name.startswith("actstudio:") and a.short and " " not in a.name
        assert a.context in CONTEXT_TITLES and a.title
        assert a.run is not None or a.context == "teleop", a.name   # teleop keys go to robots/keyboard.py
        for k in a.keys:
            assert canonical_key(k) == k, (a.name, k)               # stored as Qt writes them back


def test_default_keys_have_no_conflict_in_any_context():
    assert Keymap().conflicts() == []


def test_conflict_detection_sees_overlapping_contexts_only():
    acts = [actions.Action("actstudio:one", "One", "annotate", ("S",), print),
            actions.Action("actstudio:two", "Two", "evaluate", ("S",), print),   # other tab: fine
            actions.Action("actstudio:three", "Three", "window", ("S",), print)]  # window + tab: clash
    found = Keymap(None, acts).conflicts()
    assert {(c.key, c.first, c.second) for c in found} == {
        ("S", "actstudio:one", "actstudio:three"), ("S", "actstudio:two", "actstudio:three")}


def test_canonical_key_normalises_and_refuses_what_is_not_one_key():
    assert canonical_key("shift+ctrl+z") == "Ctrl+Shift+Z"
    assert canonical_key("Delete") == "Del" and canonical_key("escape") == "Esc"
    for bad in ("", "Ctrl+", "Foo", "Ctrl+K, Ctrl+S"):
        with pytest.raises(ShortcutError):
            canonical_key(bad)


def test_override_persists_round_trip_and_resets(tmp_path):
    ini = tmp_path / "settings.ini"
    km = Keymap(Settings(ini))
    seen = []
    km.subscribe(seen.append)
    assert km.set_keys("split", ["k"]) == ("K",)
    assert km.keys("actstudio:split") == ("K",) and seen == ["actstudio:split"]
    km.set_keys("connect", ["Ctrl+Alt+C", "F9"])
    km.settings.sync()

    again = Keymap(Settings(ini))          # a new start of the app reads them back
    assert again.keys("split") == ("K",) and again.keys("connect") == ("Ctrl+Alt+C", "F9")
    assert again.is_overridden("split") and not again.is_overridden("merge")
    assert again.problems == []
    again.reset("split")
    again.set_keys("connect", ["Ctrl+K"])   # the default again: no override stored
    assert Keymap(Settings(ini)).overrides() == {}
    # A swap (each key free only once the other moved) reads back whole, whatever the stored order.
    again.set_keys("merge", ["J"])
    again.set_keys("split", ["M"])
    again.set_keys("merge", ["S"])
    again.settings.sync()
    swapped = Keymap(Settings(ini))
    assert swapped.keys("split") == ("M",) and swapped.keys("merge") == ("S",) and swapped.problems == []


def test_conflicting_override_is_refused_with_a_clear_message_and_nothing_changes(tmp_path):
    s = Settings(tmp_path / "s.ini")
    km = Keymap(s)
    with pytest.raises(ShortcutError, match=r"^M is already 'Merge segment with the next' "
                                            r"\(actstudio:merge, Annotate tab\): change that one first$"):
        km.set_keys("split", ["M"])
    with pytest.raises(ShortcutError, match=r"Ctrl\+K is already 'Connect'"):
        km.set_keys("split", ["Ctrl+K"])            # a window key also fires inside the tab
    with pytest.raises(ShortcutError, match="Teleop"):
        km.set_keys("record", ["W"])                # W drives the arm with the keyboard input
    with pytest.raises(ShortcutError, match="fixed"):
        km.set_keys("estop", ["F12"])
    with pytest.raises(ShortcutError, match="no action named"):
        km.set_keys("warp_drive", ["F12"])
    assert km.keys("split") == ("S",) and not s.contains(OVERRIDES_KEY)
    # The same key in a context that never sees the press at the same time is allowed.
    assert km.set_keys("trial_success", ["M"]) == ("M",)
    # Swapping two keys: the first must give its key up before the second takes it.
    km.set_keys("merge", ["J"])
    km.set_keys("split", ["M"])
    with pytest.raises(ShortcutError, match="already 'Split"):
        km.reset("merge")                           # its default M is taken now
    assert km.conflicts() == []


def test_a_conflicting_override_in_a_hand_edited_settings_file_is_dropped(tmp_path):
    s = Settings(tmp_path / "s.ini")
    s.set(OVERRIDES_KEY, {"actstudio:split": ["M"], "actstudio:loop": ["K"], "gone": ["X"],
                          "actstudio:merge": "M"})
    km = Keymap(s)
    assert km.keys("split") == ("S",) and km.keys("loop") == ("K",)
    assert len(km.problems) == 3 and any("M is already actstudio:merge's" in p for p in km.problems)
    assert km.conflicts() == []


def test_docs_table_is_generated_from_the_registry():
    text = (ROOT / "docs" / "shortcuts.md").read_text()
    assert text == actions.markdown(), "regenerate: python -m app.actions > docs/shortcuts.md"
    for a in ACTIONS:
        assert f"`{a.name}`" in text
