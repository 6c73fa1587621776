"""Label suggestions in the Annotate tab: a tiny encoder trained here (policies.encoder_train on
synthetic moving-square clips) gives the selected segment its top-3 primitives with confidence,
computed off the UI thread and cached per span; the A key relabels through the undo stack."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PySide6 import QtCore, QtWidgets
from PySide6.QtTest import QTest
from test_annotate_controller import make_episode
from test_encoder import write_clip_folder
from test_gui_annotate import Settings

from policies.suggest import Suggester
from widgets.annotate_tab import ANNOTATOR_KEY, ENCODER_KEY, AnnotateTab

Qt = QtCore.Qt


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    import torch

    from policies.clip_data import ClipDataset
    from policies.encoder_train import EncoderTrainConfig, train_encoder

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("enc")
    write_clip_folder(root / "clips", per_class=4)
    cfg = EncoderTrainConfig(out_dir=str(root / "run"), epochs=3, batch_size=8, lr=3e-3, threads=1)
    res = train_encoder(ClipDataset(root / "clips", size=(24, 32)), cfg, {"d_model": 32, "embed_dim": 16,
                                                                        "n_layers": 1}, progress="none")
    return res.checkpoint


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_episode(tmp_path_factory.mktemp("tpl") / "a.h5", seed=0)


def open_tab(qtbot, folder, settings):
    win = QtWidgets.QMainWindow()
    t = AnnotateTab(settings)
    win.setCentralWidget(t)
    win.resize(1400, 850)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    t.set_dataset(folder)
    qtbot.waitUntil(lambda: t.controller.episode is not None, timeout=15000)
    t.test_window = win   # qtbot holds widgets weakly: the window (and the tab in it) must live on
    return t


@pytest.fixture
def tab(qtbot, tmp_path, template, encoder):
    shutil.copy(template, tmp_path / "ep_a.h5")
    t = open_tab(qtbot, tmp_path, Settings(**{ANNOTATOR_KEY: "alice", ENCODER_KEY: str(encoder)}))
    yield t
    t.shutdown()


def shown(tab):
    return tab.inspector.suggestions.suggestions()


def test_panel_shows_the_encoders_top3_and_caches_per_span(qtbot, tab, encoder):
    c = tab.controller
    seg = c.doc[1]
    tab.timeline.select_segment(1)
    assert tab.inspector.suggestions.status.text() == "computing…"
    qtbot.waitUntil(lambda: len(shown(tab)) == 3, timeout=20000)
    want = Suggester(encoder).suggest(c.episode.path, [(seg.start, seg.end)], k=3)[0]
    got = shown(tab)
    assert [n for n, _ in got] == [n for n, _ in want]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=0.006)  # bars are whole %
    assert got[0][1] >= got[1][1] >= got[2][1] and tab.inspector.suggestions.accept.isEnabled()
    # Another segment is computed on its own; coming back is served from the cache at once.
    tab.timeline.select_segment(2)
    qtbot.waitUntil(lambda: c.suggestions.cached(c.episode.path, c.doc[2].start, c.doc[2].end) is not None,
                    timeout=20000)
    tab.timeline.select_segment(1)
    assert [n for n, _ in shown(tab)] == [n for n, _ in want] and not c.suggestions._inflight


def test_accept_key_relabels_and_ctrl_z_restores(qtbot, tab, encoder):
    c = tab.controller
    vocab = set(Suggester(encoder).primitives)
    # A segment whose label the encoder cannot give (its vocabulary is the synthetic one): a real change.
    i = next(k for k, s in enumerate(c.doc.segments) if s.primitive not in vocab)
    before = c.doc[i]
    tab.timeline.select_segment(i)
    qtbot.waitUntil(lambda: len(shown(tab)) == 3, timeout=20000)
    top = shown(tab)[0][0]
    tab.timeline.setFocus()
    QTest.keyClick(tab.timeline, Qt.Key_A)
    assert c.doc[i].primitive == top != before.primitive and c.undo_stack.count() == 1
    assert c.doc[i].start == before.start and c.doc[i].end == before.end
    assert tab.timeline.selected_segment() == i and tab.inspector.title.text().endswith(top)
    QTest.keyClick(tab.timeline, Qt.Key_Z, Qt.ControlModifier)
    assert c.doc[i] == before
    assert tab.action("accept_suggestion").shortcut().toString() == "A"
    assert tab.action("accept_suggestion") in tab.menu_actions()


def test_without_encoder_the_panel_says_so_and_a_bad_one_is_one_line(qtbot, tmp_path, template, encoder):
    shutil.copy(template, tmp_path / "ep_a.h5")
    settings = Settings(**{ANNOTATOR_KEY: "alice", ENCODER_KEY: ""})
    t = open_tab(qtbot, tmp_path, settings)
    try:
        c = t.controller
        t.timeline.select_segment(0)
        assert t.inspector.suggestions.status.text() == "no encoder loaded" and shown(t) == []
        before = c.doc[0]
        QTest.keyClick(t.timeline, Qt.Key_A)
        assert c.doc[0] == before and "no encoder loaded" in t.message_label.text()
        bad = tmp_path / "encoder_bad.pt"
        bad.write_bytes(b"not a checkpoint")
        t.set_encoder(bad)
        assert settings.get(ENCODER_KEY) == str(bad)
        qtbot.waitUntil(lambda: t.inspector.suggestions.status.text().startswith("encoder: "), timeout=20000)
        assert "\n" not in t.inspector.suggestions.status.text() and shown(t) == []
        t.set_encoder(encoder)   # switching checkpoints clears the error and the cache
        qtbot.waitUntil(lambda: len(shown(t)) == 3, timeout=20000)
    finally:
        t.shutdown()
