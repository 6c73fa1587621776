"""app/playback.py: the one frame-by-frame playback the Annotate controller and the Timeline share."""
from app.playback import Playback


class _Owner:
    def __init__(self, n_frames, fps=200.0, span=None):
        self.frame = 0
        self.shown = []
        self.playback = Playback(lambda: self.frame, self._set, span_at=lambda f: span)
        self.playback.n_frames, self.playback.fps = n_frames, fps

    def _set(self, frame):
        self.frame = frame
        self.shown.append(frame)


def test_plays_to_the_last_frame_and_stops(qtbot):
    o = _Owner(6)
    with qtbot.waitSignal(o.playback.playingChanged, timeout=2000) as started:
        o.playback.set_playing(True)
    assert started.args == [True]
    qtbot.waitUntil(lambda: not o.playback.is_playing(), timeout=3000)
    assert o.shown == [1, 2, 3, 4, 5] and o.frame == 5


def test_starting_on_the_last_frame_starts_over(qtbot):
    o = _Owner(4)
    o.frame = 3
    o.playback.set_playing(True)
    assert o.shown[:1] == [0]
    qtbot.waitUntil(lambda: not o.playback.is_playing(), timeout=3000)
    assert o.shown == [0, 1, 2, 3]


def test_loop_wraps_inside_the_span_until_stopped(qtbot):
    o = _Owner(100, span=(10, 13))
    o.frame = 11
    o.playback.set_loop(True)
    assert o.playback.loop_span == (10, 13)
    o.playback.set_playing(True)
    qtbot.waitUntil(lambda: len(o.shown) >= 7, timeout=3000)
    o.playback.set_playing(False)
    assert o.shown[:7] == [12, 10, 11, 12, 10, 11, 12] and not o.playback.is_playing()
