"""One registry of the app's named actions and their keys (issue 15), after napari's action manager and
``_points_key_bindings.py``.

Every key the app answers to is an :class:`Action` here: a name (``actstudio:split``), a title, the
**context** it acts in, its default keys, and its body — a plain function over the object that owns the
behaviour (the main window, the Annotate tab, the Evaluate tab). The bodies call methods only, no Qt,
so this module stays below ``widgets/``. ``widgets/shortcuts.py`` builds the QActions, the buttons'
key hints and the *Keyboard shortcuts* dialog from it; ``python -m app.actions`` writes
``docs/shortcuts.md``.

A :class:`Keymap` is the registry's defaults plus the user's overrides, persisted in the settings
under ``shortcuts/overrides`` (JSON ``{name: [keys]}``). An override that would share a key with
another action acting in an overlapping context is refused with a one-line message, so the map never
holds a conflict; an override read back from a hand-edited settings file that conflicts is dropped
(and reported in ``Keymap.problems``) rather than loaded.

Contexts (``OVERLAPS`` says which can see the same key press):

- ``app`` — everywhere, dialogs included (E-STOP: an application shortcut plus the main window's
  application-wide event filter, which catches an Esc that a widget or dialog would take);
- ``window`` — the main window and its tabs (menus, F5, Ctrl+K …);
- ``annotate`` — the Annotate tab when it has the focus and no text field is focused (text fields
  take their typing keys first);
- ``evaluate`` — the Evaluate tab;
- ``outcome`` — the episode outcome dialog;
- ``teleop`` — the keyboard teleop input (listed so nothing is bound over them; fixed).

Fixed actions (E-STOP, the keyboard teleop keys, the outcome dialog's letters, which also answer
with Alt from the notes field) are listed but cannot be rebound.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from PySide6.QtGui import QKeySequence

log = logging.getLogger(__name__)

PREFIX = "actstudio:"
OVERRIDES_KEY = "shortcuts/overrides"

CONTEXT_TITLES = {"app": "Everywhere", "window": "Main window", "annotate": "Annotate tab",
                  "evaluate": "Evaluate tab", "outcome": "Outcome dialog", "teleop": "Keyboard teleop"}
# Which contexts can receive the same key press (symmetric): the window's shortcuts also fire while
# a tab has the focus, the app-wide ones everywhere; two tabs never have the focus at once, and the
# modal outcome dialog hides the window's shortcuts.
_OVERLAP_PAIRS = {("app", c) for c in CONTEXT_TITLES} | {
    ("window", "window"), ("window", "annotate"), ("window", "evaluate"), ("window", "teleop"),
    ("annotate", "annotate"), ("evaluate", "evaluate"), ("outcome", "outcome"), ("teleop", "teleop")}
OVERLAPS = {(a, b) for a, b in _OVERLAP_PAIRS} | {(b, a) for a, b in _OVERLAP_PAIRS}


class ShortcutError(ValueError):
    """A shortcut the keymap refuses (unknown action, fixed action, bad key, conflict)."""


@dataclass(frozen=True)
class Action:
    name: str                      # "actstudio:split"
    title: str                     # menu text; "&" marks the menu mnemonic (``label`` drops it)
    context: str                   # a key of CONTEXT_TITLES
    keys: tuple[str, ...] = ()     # default keys, Qt portable text ("Ctrl+Shift+Z")
    run: Callable[[Any], Any] | None = None   # body over the context's owner; None: handled elsewhere
    tip: str = ""
    fixed: bool = False            # listed, not rebindable
    checkable: bool = False

    @property
    def label(self) -> str:
        return self.title.replace("&", "")

    @property
    def short(self) -> str:
        return self.name.removeprefix(PREFIX)


def canonical_key(text: str) -> str:
    """``text`` as Qt's portable key text ("shift+ctrl+z" → "Ctrl+Shift+Z", "Delete" → "Del");
    ShortcutError for anything that is not exactly one key combination."""
    text = str(text).strip()
    if not text:
        raise ShortcutError("empty key")
    seq = QKeySequence(text)
    out = seq.toString(QKeySequence.PortableText)
    if seq.count() != 1 or not out:
        raise ShortcutError(f"not a single key combination: {text!r}")
    if out.endswith("+") and len(out) > 1 and out[-2] != "+":   # "Ctrl+" parsed as a bare modifier
        raise ShortcutError(f"not a key: {text!r}")
    return out


# ---------------------------------------------------------------------------------------- bodies
# Over the main window (widgets/main_window.py MainWindow): its controller, device bar, tabs, dialogs.

def _connect(w): w.device_bar.connect_button.click()
def _record(w): w.collect_tab.record_button.click()


# Over the Annotate tab (widgets/annotate_tab.py): edits go through its controller's undo stack;
# navigation and segment edits through its timeline, whose notion of the selected segment decides.

def _timeline(short: str) -> Callable[[Any], None]:
    def run(tab):
        tab.timeline.trigger(short)
    run.__name__ = f"timeline_{short}"
    return run


def _fill_gap(tab):
    tab.controller.fill_gap(tab.controller.frame)


def _accept_suggestion(tab):
    tab.controller.accept_suggestion(tab.inspector.index)


# ---------------------------------------------------------------------------------------- table
def _a(short: str, title: str, context: str, keys: Iterable[str] = (), run=None, **kw) -> Action:
    return Action(PREFIX + short, title, context, tuple(keys), run, **kw)


ANNOTATE_PRIMITIVES = 9   # keys 1–9 set the primitive, in vocabulary order

ACTIONS: tuple[Action, ...] = (
    # -- everywhere
    _a("estop", "&E-STOP", "app", ("Esc",), lambda w: w.controller.estop(), fixed=True,
       tip="emergency stop (works anywhere in the app, dialogs included)"),
    # -- main window
    _a("open_dataset", "&Open dataset…", "window", ("Ctrl+O",), lambda w: w.choose_dataset(),
       tip="choose the folder episodes are recorded into"),
    _a("refresh_episodes", "&Refresh episode list", "window", ("Ctrl+R",), lambda w: w.controller.refresh_dataset()),
    _a("quit", "&Quit", "window", ("Ctrl+Q",), lambda w: w.close()),
    _a("connect", "&Connect", "window", ("Ctrl+K",), _connect,
       tip="connect / disconnect the devices in the device bar"),
    _a("reset_estop", "&Reset E-stop", "window", ("Ctrl+Shift+E",), lambda w: w.controller.reset_estop()),
    _a("recover", "Re&cover arm", "window", ("Ctrl+Shift+R",), lambda w: w.controller.recover(),
       tip="clear the controller fault (reflex, error, controller e-stop)"),
    _a("home", "&Home arm", "window", ("Ctrl+Shift+H",), lambda w: w.controller.home(),
       tip="move the arm to its home configuration (the control loop pauses)"),
    _a("lab_settings", "&Lab settings…", "window", (), lambda w: w.show_lab_settings(),
       tip="TCP offset and workspace box of this bench, per robot"),
    # F5 rather than R for recording: R is "up" for the keyboard teleop input.
    _a("record", "&Start / stop recording", "window", ("F5",), _record,
       tip="record an episode (or the input device's record button)"),
    _a("scripted_episode", "Run &scripted episode", "window", ("F6",), lambda w: w.controller.run_scripted_episode(),
       tip="sim: reset with the next seed and record the scripted operator"),
    _a("new_layout", "&New layout", "window", ("F7",), lambda w: w.controller.reset_scene(),
       tip="sim: randomise the scene (next seed) and home the arm"),
    _a("calibrate", "&Calibrate camera…", "window", (), lambda w: w.open_calibration(),
       tip="hand-eye calibration: the arm shows a ChArUco board to the camera from several poses"),
    _a("shortcuts", "&Keyboard shortcuts…", "window", ("F1",), lambda w: w.show_shortcuts(),
       tip="every key of the app; change them here"),
    _a("about", "&About ActStudio", "window", (), lambda w: w.show_about()),
    # -- Annotate tab: playback and navigation
    _a("play", "Play / pause", "annotate", ("Space",), lambda t: t.controller.toggle_playing()),
    _a("prev_frame", "Previous frame", "annotate", ("Left",), _timeline("prev_frame")),
    _a("next_frame", "Next frame", "annotate", ("Right",), _timeline("next_frame")),
    _a("prev_frame_10", "Back 10 frames", "annotate", ("Shift+Left",), _timeline("prev_frame_10")),
    _a("next_frame_10", "Forward 10 frames", "annotate", ("Shift+Right",), _timeline("next_frame_10")),
    _a("prev_boundary", "Previous boundary", "annotate", ("[",), _timeline("prev_boundary")),
    _a("next_boundary", "Next boundary", "annotate", ("]",), _timeline("next_boundary")),
    _a("loop", "Loop current segment", "annotate", ("L",), lambda t: t.action("loop").toggle(), checkable=True),
    # -- Annotate tab: editing
    _a("split", "Split segment at playhead", "annotate", ("S",), _timeline("split")),
    _a("merge", "Merge segment with the next", "annotate", ("M",), _timeline("merge")),
    _a("delete", "Delete segment", "annotate", ("Del", "Backspace"), _timeline("delete")),
    # N: a segment over the unsegmented gap at the playhead (segmenting by hand).
    _a("fill_gap", "Add segment over the gap at the playhead", "annotate", ("N",), _fill_gap),
    *(_a(f"primitive_{i}", f"Set primitive #{i}", "annotate", (str(i),), _timeline(f"primitive_{i}"))
      for i in range(1, ANNOTATE_PRIMITIVES + 1)),
    _a("undo", "Undo", "annotate", ("Ctrl+Z",), lambda t: t.controller.undo()),
    _a("redo", "Redo", "annotate", ("Ctrl+Shift+Z", "Ctrl+Y"), lambda t: t.controller.redo()),
    _a("propose", "Propose segments", "annotate", ("Ctrl+Shift+P",), lambda t: t.controller.propose()),
    _a("accept_all", "Accept all proposals", "annotate", ("Ctrl+Shift+A",), lambda t: t.controller.accept_all()),
    _a("save", "Save annotations now", "annotate", ("Ctrl+S",), lambda t: t.controller.save_now(queue_behind=True)),
    # A: free in the tab (S/M/L/1–9 are taken) and next to the number keys the hand is already on.
    _a("accept_suggestion", "Accept top label suggestion", "annotate", ("A",), _accept_suggestion),
    _a("choose_encoder", "Choose encoder for suggestions…", "annotate", (), lambda t: t.choose_encoder()),
    # -- Evaluate tab
    _a("trial_success", "Operator: trial succeeded", "evaluate", ("S",), lambda t: t.operator_outcome(True),
       tip="on hardware the operator's call; in sim an override of the success predicate"),
    _a("trial_failure", "Operator: trial failed", "evaluate", ("F",), lambda t: t.operator_outcome(False)),
    _a("confirm_reset", "Confirm scene reset", "evaluate", ("Return",), lambda t: t.confirm_reset(),
       tip="hardware: the scene is reset, start the next trial"),
    # -- outcome dialog (widgets/dialogs.py OutcomeDialog reads these; Alt+letter from the notes)
    _a("outcome_success", "Outcome: success", "outcome", ("S",), lambda d: d.choose("success"), fixed=True),
    _a("outcome_failure", "Outcome: failure", "outcome", ("F",), lambda d: d.choose("failure"), fixed=True),
    _a("outcome_discard", "Outcome: discard", "outcome", ("D",), lambda d: d.choose("discard"), fixed=True),
    _a("outcome_default", "Outcome: the preselected answer (from the notes)", "outcome", ("Ctrl+Return",),
       lambda d: d.choose(d.default_outcome), fixed=True),
    # -- keyboard teleop (robots/keyboard.py maps the key names; app/collect_controller.py feeds them)
    _a("teleop_xy", "Teleop: away / toward, left / right", "teleop", ("W", "S", "A", "D"), fixed=True),
    _a("teleop_z", "Teleop: up / down", "teleop", ("R", "F"), fixed=True),
    _a("teleop_yaw", "Teleop: yaw", "teleop", ("Q", "E"), fixed=True),
    _a("teleop_tilt", "Teleop: roll / pitch", "teleop", ("Up", "Down", "Left", "Right"), fixed=True),
    _a("teleop_gripper", "Teleop: toggle gripper", "teleop", ("Space",), fixed=True),
    _a("teleop_record", "Teleop: record start / stop", "teleop", ("Return",), fixed=True),
)
BY_NAME: dict[str, Action] = {a.name: a for a in ACTIONS}


def get(name: str) -> Action:
    """The action ``name`` ("actstudio:split" or just "split")."""
    full = name if name.startswith(PREFIX) else PREFIX + name
    try:
        return BY_NAME[full]
    except KeyError:
        raise ShortcutError(f"no action named {name!r}") from None


def in_context(context: str) -> list[Action]:
    return [a for a in ACTIONS if a.context == context]


# ---------------------------------------------------------------------------------------- keymap
@dataclass
class Conflict:
    key: str
    first: str     # action names
    second: str


class Keymap:
    """The registry's keys with the user's overrides; ``settings`` is app.settings.Settings or
    anything with get/set (None: defaults only, nothing persisted)."""

    def __init__(self, settings=None, actions: Iterable[Action] = ACTIONS):
        self.settings = settings
        self.actions = {a.name: a for a in actions}
        self._overrides: dict[str, tuple[str, ...]] = {}
        self._listeners: list[Callable[[str], None]] = []
        self.problems: list[str] = []   # overrides found in the settings and not loaded, one line each
        if settings is not None:
            self._load()

    # -- reading
    def action(self, name: str) -> Action:
        """The action ``name`` ("actstudio:split" or "split"); ShortcutError if there is none."""
        return self._action(name)

    def keys(self, name: str) -> tuple[str, ...]:
        a = self._action(name)
        return self._overrides.get(a.name, a.keys)

    def key_text(self, name: str, sep: str = ", ") -> str:
        return sep.join(self.keys(name))

    def is_overridden(self, name: str) -> bool:
        return self._action(name).name in self._overrides

    def overrides(self) -> dict[str, tuple[str, ...]]:
        return dict(self._overrides)

    def conflicts(self) -> list[Conflict]:
        """Key shared by two actions whose contexts overlap (none when the table is sound)."""
        seen: list[tuple[str, Action]] = []
        out: list[Conflict] = []
        for a in self.actions.values():
            for k in self.keys(a.name):
                ck = canonical_key(k)
                for other_key, other in seen:
                    if other_key == ck and other is not a and (other.context, a.context) in OVERLAPS:
                        out.append(Conflict(ck, other.name, a.name))
                seen.append((ck, a))
        return out

    def conflicts_of(self, name: str) -> list[Conflict]:
        full = self._action(name).name
        return [c for c in self.conflicts() if full in (c.first, c.second)]

    def owner_of(self, key: str, context: str, *, besides: str = "") -> Action | None:
        """The action other than ``besides`` that ``key`` triggers where ``context`` is active."""
        ck = canonical_key(key)
        for a in self.actions.values():
            if a.name != besides and (a.context, context) in OVERLAPS and \
                    ck in (canonical_key(k) for k in self.keys(a.name)):
                return a
        return None

    # -- changing
    def check(self, name: str, keys: Iterable[str]) -> tuple[str, ...]:
        """``keys`` as canonical text if ``name`` may have them; ShortcutError with the reason if not."""
        a, out = self._validate(name, keys)
        for ck in out:
            other = self.owner_of(ck, a.context, besides=a.name)
            if other is not None:
                where = CONTEXT_TITLES[other.context]
                raise ShortcutError(f"{ck} is already '{other.label}' ({other.name}, {where}): "
                                    "change that one first")
        return out

    def _validate(self, name: str, keys: Iterable[str]) -> tuple[Action, tuple[str, ...]]:
        """The action and its canonical keys, conflicts aside (unknown / fixed action, bad key)."""
        a = self._action(name)
        if a.fixed:
            raise ShortcutError(f"{a.label} ({a.name}) is fixed: its keys cannot be changed")
        if isinstance(keys, str) or not isinstance(keys, (list, tuple)):
            raise ShortcutError(f"keys must be a list, got {keys!r}")
        out: list[str] = []
        for k in keys:
            ck = canonical_key(k)
            if ck not in out:
                out.append(ck)
        return a, tuple(out)

    def set_keys(self, name: str, keys: Iterable[str]) -> tuple[str, ...]:
        """Override ``name``'s keys (empty: no key); persisted; refused with ShortcutError on a conflict."""
        a = self._action(name)
        keys = self.check(a.name, keys)
        if keys == a.keys:
            self._overrides.pop(a.name, None)
        else:
            self._overrides[a.name] = keys
        self._save()
        self._notify(a.name)
        return keys

    def reset(self, name: str) -> None:
        """Back to the default keys (refused if another action took one of them meanwhile)."""
        a = self._action(name)
        if a.name in self._overrides:
            self.check(a.name, a.keys)
            del self._overrides[a.name]
            self._save()
            self._notify(a.name)

    def reset_all(self) -> None:
        names = list(self._overrides)
        self._overrides.clear()
        self._save()
        for n in names:
            self._notify(n)

    def subscribe(self, fn: Callable[[str], None]) -> Callable[[], None]:
        """``fn(name)`` after a change of ``name``'s keys; returns the unsubscribe function."""
        self._listeners.append(fn)
        return lambda: fn in self._listeners and self._listeners.remove(fn)

    # -- internals
    def _action(self, name: str) -> Action:
        full = name if name.startswith(PREFIX) else PREFIX + name
        try:
            return self.actions[full]
        except KeyError:
            raise ShortcutError(f"no action named {name!r}") from None

    def _notify(self, name: str) -> None:
        for fn in list(self._listeners):
            fn(name)

    def _load(self) -> None:
        stored = self.settings.get(OVERRIDES_KEY, {})
        if not isinstance(stored, Mapping):
            self.problems.append(f"{OVERRIDES_KEY}: not a mapping, ignored")
            return
        # All at once, then conflicts resolved: one at a time against the defaults would drop a
        # valid swap (split→M stored before merge→J).
        for name, keys in stored.items():
            try:
                a, canon = self._validate(name, keys)
                self._overrides[a.name] = canon
            except ShortcutError as exc:
                self.problems.append(f"shortcut override {name}: {exc}")
        while (found := [c for c in self.conflicts() if {c.first, c.second} & set(self._overrides)]):
            c = found[0]
            drop = c.second if c.second in self._overrides else c.first
            other = c.first if drop == c.second else c.second
            del self._overrides[drop]
            self.problems.append(f"shortcut override {drop}: {c.key} is already {other}'s")
        for line in self.problems:
            log.warning("%s (ignored)", line)

    def _save(self) -> None:
        if self.settings is not None:
            self.settings.set(OVERRIDES_KEY, {n: list(k) for n, k in self._overrides.items()})


# ---------------------------------------------------------------------------------------- docs
def markdown(keymap: Keymap | None = None) -> str:
    """The key table for docs/shortcuts.md (defaults unless a keymap is given)."""
    km = keymap or Keymap()
    lines = ["# Keyboard shortcuts", "",
             ("Generated from `app/actions.py` by `python -m app.actions > docs/shortcuts.md` (a test "
              "checks it is current). In the app: **Help › Keyboard shortcuts…** (F1) lists the same "
              "table, searchable, and changes a key (stored in the settings; a key another action "
              "already uses in an overlapping context is refused). Fixed keys cannot be changed."), ""]
    for context, title in CONTEXT_TITLES.items():
        acts = [a for a in km.actions.values() if a.context == context]
        if not acts:
            continue
        lines += [f"## {title}", "", "| keys | action | name |", "|---|---|---|"]
        for a in acts:
            keys = " / ".join(f"`{k}`" for k in km.keys(a.name)) or "—"
            lines.append(f"| {keys} | {a.label}{' (fixed)' if a.fixed else ''} | `{a.name}` |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
