"""The Annotate tab: dataset browser | video + timeline | segment inspector, over an AnnotateController.

Keys are QActions built from the app's action registry (app/actions.py, context "annotate"; the
user's overrides included) on this tab (Qt context: the tab and its children), so they work wherever
focus is inside the tab — except in text fields, which keep their own typing keys — and the main
window can list the same actions in its "Annotate" menu (``menu_actions()``). The registry's bodies
send navigation and edit keys through ``Timeline.trigger`` so the timeline's notion of "selected
segment" and "boundary" decides what they act on; the resulting intents are applied by the
controller's undo stack.

Size (~550 lines): one tab's layout and its wiring to the controller; the logic lives in
app/annotate_controller.py and its modules, the widgets in timeline/video_player/segment_inspector.
"""
from __future__ import annotations

import getpass
from pathlib import Path

import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from app import actions, preload
from app.annotate_controller import AnnotateController, EpisodeData
from recorder.primitives import PRIMITIVES
from widgets import style
from widgets.dataset_browser import DatasetBrowser
from widgets.segment_inspector import SegmentInspector
from widgets.shortcuts import keymap_for, make_action
from widgets.timeline import Timeline
from widgets.video_player import VideoPlayer

ANNOTATOR_KEY = "annotate/annotator"
DATASET_KEY = "annotate/last_dataset"
ENCODER_KEY = "annotate/encoder"       # label-suggestion checkpoint; "" = explicitly none
CHECKPOINTS = Path(__file__).resolve().parents[1] / "assets" / "checkpoints"
PRIMITIVE_KEYS = tuple(PRIMITIVES[:9])   # keys 1–9, in vocabulary order (shown in the legend)

# The tab's actions (names, titles, default keys, bodies) are the registry's "annotate" context
# (app/actions.py); these are the ones that need no open episode.
NO_EPISODE_ACTIONS = ("choose_encoder",)


def default_encoder() -> Path | None:
    """A bundled encoder checkpoint (assets/checkpoints/encoder*.pt), if one ships."""
    found = sorted(CHECKPOINTS.glob("encoder*.pt"))
    return found[0] if found else None

SAVE_COLORS = {"saved": "#6fd08c", "saving": style.ACCENT, "dirty": style.WARNING, "failed": style.ERROR,
               "idle": style.TEXT_DIM}


class AnnotateTab(QtWidgets.QWidget):
    statusMessage = QtCore.Signal(str)   # for the main window's status bar

    def __init__(self, settings, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.controller: AnnotateController | None = None
        self._opening: Path | None = None
        self._episode: EpisodeData | None = None

        self.browser = DatasetBrowser()
        self.player = VideoPlayer()
        self.keymap = keymap_for(settings)
        self.timeline = Timeline(fps=20.0, primitive_keys=PRIMITIVE_KEYS, keymap=self.keymap)
        self.inspector = SegmentInspector(primitive_keys=PRIMITIVE_KEYS)

        # Top bar: who annotates, whose segments are shown, agreement, proposal actions.
        bar = QtWidgets.QWidget()
        bar.setObjectName("viewToolbar")
        bar.setStyleSheet(style.TOOLBAR_QSS)
        self.annotator_label = QtWidgets.QLabel("")
        self.view_combo = QtWidgets.QComboBox()
        self.view_combo.setToolTip("Show another annotator's segments (read-only)")
        self.view_combo.setMinimumWidth(130)
        self.view_combo.activated.connect(lambda i: self._set_view(self.view_combo.itemData(i)))
        self.agreement_label = QtWidgets.QLabel("")
        self.agreement_label.setToolTip("Boundary F1 within ±3 frames and Krippendorff's α of quality scores")
        # Long texts wrap instead of widening the tab: the main window must fit a 1280 px screen.
        self.agreement_label.setWordWrap(True)
        self.agreement_label.setMinimumWidth(170)
        self.propose_button = QtWidgets.QPushButton("Propose segments")
        self.accept_button = QtWidgets.QPushButton("Accept all proposals")
        for w in (self.view_combo, self.propose_button, self.accept_button):
            w.setFocusPolicy(QtCore.Qt.NoFocus)
        row = QtWidgets.QHBoxLayout(bar)
        row.setContentsMargins(6, 3, 6, 3)
        row.addWidget(self.annotator_label)
        row.addSpacing(12)
        row.addWidget(QtWidgets.QLabel("View"))
        row.addWidget(self.view_combo)
        row.addSpacing(12)
        row.addWidget(self.agreement_label, 1)
        row.addWidget(self.propose_button)
        row.addWidget(self.accept_button)

        # "Video | 3D": the GL view is built on first use, so offscreen runs never need a GL context.
        self.view_tabs = QtWidgets.QTabWidget()
        self.view_tabs.setObjectName("view_tabs")
        self.view_tabs.setDocumentMode(True)
        self.view_tabs.addTab(self.player, "Video")
        self._scene3d_page = QtWidgets.QWidget()
        QtWidgets.QVBoxLayout(self._scene3d_page).setContentsMargins(0, 0, 0, 0)
        self.view_tabs.addTab(self._scene3d_page, "3D")
        self.view_tabs.currentChanged.connect(self._on_view_tab)
        self.scene3d = None          # widgets.scene3d_panel.Scene3DPanel once the 3D page was opened
        self._camera3d = None        # (path, (K, T_base_camera, depth_scale) | None) of the open episode

        center = QtWidgets.QSplitter(QtCore.Qt.Vertical)
        center.addWidget(self.view_tabs)
        center.addWidget(self.timeline)
        center.setStretchFactor(0, 3)
        center.setStretchFactor(1, 2)
        middle = QtWidgets.QWidget()
        mid_lay = QtWidgets.QVBoxLayout(middle)
        mid_lay.setContentsMargins(0, 0, 0, 0)
        mid_lay.setSpacing(0)
        mid_lay.addWidget(bar)
        mid_lay.addWidget(center, 1)

        split = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        split.addWidget(self.browser)
        split.addWidget(middle)
        split.addWidget(self.inspector)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setStretchFactor(2, 0)
        split.setSizes([250, 690, 340])   # sums to 1280: a laptop screen shows the list, not just its first column
        self.splitter = split

        # Status row: autosave state, background work, last notice.
        self.save_label = QtWidgets.QLabel("")
        self.busy = QtWidgets.QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumWidth(120)
        self.busy.setMaximumHeight(12)
        self.busy.hide()
        self.message_label = QtWidgets.QLabel("")
        self.message_label.setStyleSheet(f"color: {style.TEXT_DIM};")
        # A long notice is cut at the tab's edge (the status bar shows it too), never widens the window.
        self.message_label.setSizePolicy(QtWidgets.QSizePolicy.Ignored, QtWidgets.QSizePolicy.Preferred)
        status = QtWidgets.QHBoxLayout()
        status.setContentsMargins(6, 2, 6, 2)
        status.addWidget(self.save_label)
        status.addWidget(self.busy)
        status.addSpacing(16)
        status.addWidget(self.message_label, 1)

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(split, 1)
        lay.addLayout(status)
        self.setStyleSheet(f"AnnotateTab {{ background: {style.BACKGROUND}; }} QLabel {{ color: {style.TEXT}; }}"
                           f" QSplitter::handle {{ background: {style.GRID}; }}")
        self.setAutoFillBackground(True)
        pal = self.palette()
        pal.setColor(QtGui.QPalette.Window, QtGui.QColor(style.BACKGROUND))
        self.setPalette(pal)

        self._actions: dict[str, QtGui.QAction] = {}
        self._build_actions()
        self.browser.episodeActivated.connect(self.open_episode)
        self.browser.scanned.connect(self._on_scanned)
        self.player.playToggled.connect(lambda: self.trigger("play"))
        self.player.loopToggled.connect(lambda on: self._actions["loop"].setChecked(on))
        self.player.modeChanged.connect(lambda m: self.controller and self.controller.set_depth_enabled(m != "rgb"))
        self.propose_button.clicked.connect(lambda: self.trigger("propose"))
        self.accept_button.clicked.connect(lambda: self.trigger("accept_all"))
        self._connect_timeline()
        self.inspector.fieldEdited.connect(self._on_field_edited)
        self.inspector.suggestions.acceptRequested.connect(lambda: self.trigger("accept_suggestion"))
        self.inspector.suggestions.chooseEncoderRequested.connect(self.choose_encoder)
        self.inspector.suggestions.set_encoder_name(self._encoder_name(self.encoder_path()))
        self._update_enabled()

    # -- public API (main window) ----------------------------------------------------------------

    def set_dataset(self, folder: str | Path) -> None:
        """Show a dataset folder; the first readable episode opens when the scan is done."""
        self._ensure_controller()
        self.settings.set(DATASET_KEY, str(folder))
        self.browser.set_folder(Path(folder))

    def dataset_folder(self) -> Path | None:
        return self.browser.folder

    def refresh(self) -> None:
        """Rescan the shown dataset (episodes were recorded into it); the open episode stays open."""
        self.browser.rescan()

    def menu_actions(self) -> list[QtGui.QAction]:
        """The tab's actions with their shortcuts, in menu order (separators included)."""
        out: list[QtGui.QAction] = []
        groups = (("play", "prev_frame", "next_frame", "prev_frame_10", "next_frame_10", "prev_boundary",
                   "next_boundary", "loop"),
                  ("split", "merge", "delete", "fill_gap", *[f"primitive_{i}" for i in range(1, 10)]),
                  ("undo", "redo"), ("propose", "accept_all", "save"), ("accept_suggestion", "choose_encoder"))
        for g, names in enumerate(groups):
            if g:
                sep = QtGui.QAction(self)
                sep.setSeparator(True)
                out.append(sep)
            out.extend(self._actions[n] for n in names)
        return out

    def shutdown(self) -> None:
        """Flush autosave and stop the workers (window closing)."""
        if self.scene3d is not None:
            self.scene3d.shutdown()
        if self.controller is not None:
            self.controller.shutdown()
            # The controller and its undo stack outlive some child widgets while Qt deletes the
            # tab; their last signals must not reach half-destroyed views.
            self.controller.blockSignals(True)
            self.controller.undo_stack.blockSignals(True)

    def action(self, name: str) -> QtGui.QAction:
        return self._actions[name]

    # -- label suggestions -----------------------------------------------------------------------

    def encoder_path(self) -> Path | None:
        """The chosen encoder checkpoint (settings), else the bundled one, else None."""
        stored = self.settings.get(ENCODER_KEY, None)
        if stored is None:
            return default_encoder()
        return Path(stored) if str(stored).strip() else None

    @staticmethod
    def _encoder_name(path: Path | None) -> str:
        return f"{path.parent.name}/{path.name}" if path is not None else "none"

    def set_encoder(self, path: str | Path | None) -> None:
        """Use this encoder checkpoint for suggestions (None/"": none); remembered in the settings."""
        path = Path(path) if path and str(path).strip() else None
        self.settings.set(ENCODER_KEY, str(path) if path is not None else "")
        self.inspector.suggestions.set_encoder_name(self._encoder_name(path))
        if self.controller is not None:
            self.controller.suggestions.set_checkpoint(path)
        self._refresh_suggestions()

    def choose_encoder(self) -> None:
        current = self.encoder_path()
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Encoder checkpoint for label suggestions", str(current.parent if current else CHECKPOINTS),
            "Checkpoints (*.pt)")
        if path:
            self.set_encoder(path)

    def _refresh_suggestions(self) -> None:
        panel, c = self.inspector.suggestions, self.controller
        svc = c.suggestions if c is not None else None
        doc = c.shown_doc() if c is not None else None
        i = self.inspector.index
        if svc is None or svc.checkpoint is None:
            panel.show_suggestions(None, "no encoder loaded")
            return
        if svc.error:
            panel.show_suggestions(None, f"encoder: {svc.error}")
            return
        if c.episode is None or doc is None or not 0 <= i < len(doc):
            panel.show_suggestions(None, "select a segment")
            return
        seg = doc[i]
        got = svc.request(c.episode.path, seg.start, seg.end)
        panel.show_suggestions(got, "" if got is not None else "computing…", editable=c.is_editable())

    # -- controller ------------------------------------------------------------------------------

    def annotator_name(self) -> str:
        """From settings; asked once (and remembered) when not set."""
        name = str(self.settings.get(ANNOTATOR_KEY, "") or "").strip()
        if not name:
            name, ok = QtWidgets.QInputDialog.getText(
                self, "Annotator", "Your annotator name (stored with every segment you edit):",
                text=getpass.getuser())
            name = name.strip().replace("/", "_").lstrip("_") if ok else ""
            name = name or getpass.getuser()
            self.settings.set(ANNOTATOR_KEY, name)
        return name

    def _ensure_controller(self) -> AnnotateController:
        if self.controller is not None:
            return self.controller
        c = AnnotateController(self.annotator_name(), self)
        self.controller = c
        self.annotator_label.setText(f"Annotator: <b>{c.annotator}</b>")
        self.timeline.frameChanged.connect(c.set_frame)
        c.frameChanged.connect(self._on_frame)
        c.frameReady.connect(self._on_frame_ready)
        c.episodeOpened.connect(self._on_opened)
        c.episodeFailed.connect(self._on_failed)
        c.segmentsChanged.connect(self._on_segments)
        c.keyframesChanged.connect(self._on_keyframes)
        c.viewChanged.connect(lambda *_: self._refresh_views())
        c.playingChanged.connect(self.player.set_playing)
        c.loopChanged.connect(self.player.set_looping)
        c.saveStateChanged.connect(self._on_save_state)
        c.busyChanged.connect(self._on_busy)
        c.message.connect(self._show_message)
        c.statusChanged.connect(self.browser.update_status)
        c.undo_stack.indexChanged.connect(self._on_undo_index)
        c.suggestions.set_checkpoint(self.encoder_path())
        c.suggestions.ready.connect(lambda *_: self._refresh_suggestions())
        c.suggestions.failed.connect(lambda text: (self._show_message(f"suggestions: {text}"),
                                                   self._refresh_suggestions()))
        return c

    def open_episode(self, path: str | Path) -> None:
        path = Path(path)
        c = self._ensure_controller()
        current = c.episode.path if c.episode is not None else None
        if path in (self._opening, current):
            return
        self._opening = path
        self._show_message(f"opening {path.name}…")
        c.open_episode(path)

    # -- actions ---------------------------------------------------------------------------------

    def _build_actions(self) -> None:
        for spec in actions.in_context("annotate"):
            name = spec.short
            text = None
            if name.startswith("primitive_"):
                k = int(name.rsplit("_", 1)[1])
                text = f"Primitive {k}: {PRIMITIVE_KEYS[k - 1]}"
            # Through trigger(): the "open an episode first" guard.
            act = make_action(self.keymap, spec.name, self, self, text=text, object_name=f"annotate_{name}",
                              on_trigger=None if spec.checkable else (lambda n=name: self.trigger(n)))
            if spec.checkable:
                act.toggled.connect(lambda on, n=name: self._on_toggle(n, on))
            self._actions[name] = act

    def trigger(self, name: str) -> None:
        """Run a named action of the registry's annotate context (menu, key or button)."""
        spec = actions.get(name)
        c = self.controller
        if spec.short not in NO_EPISODE_ACTIONS and (c is None or c.episode is None):
            self._show_message("open an episode first")
            return
        spec.run(self)

    def _on_toggle(self, name: str, on: bool) -> None:
        if name == "loop" and self.controller is not None:
            self.controller.set_loop(on)

    def _connect_timeline(self) -> None:
        t = self.timeline

        def edit(fn):
            return lambda *args: self.controller is not None and fn(self.controller)(*args)

        t.boundaryMoved.connect(lambda seg, edge, frame: self.controller and self.controller.move_boundary(seg, edge, frame))
        t.splitRequested.connect(edit(lambda c: c.split_at))
        t.mergeRequested.connect(edit(lambda c: c.merge))
        t.deleteRequested.connect(edit(lambda c: c.delete))
        t.primitiveRequested.connect(edit(lambda c: c.relabel))
        t.segmentSelected.connect(lambda _i: self._refresh_inspector())

    # -- controller → view -----------------------------------------------------------------------

    def _on_scanned(self, good: int, bad: int) -> None:
        if bad:
            self._show_message(f"{bad} episode file{'s' * (bad != 1)} could not be read (see the list)")
        paths = self.browser.good_paths()
        c = self.controller
        if paths and (c is None or c.episode is None) and self._opening is None:
            self.browser.select(paths[0])
        elif c is not None and c.episode is not None:
            self.browser.select(c.episode.path)   # a rescan keeps the open episode highlighted

    def _on_opened(self, ep: EpisodeData) -> None:
        self._opening = None
        self._episode = ep
        self.timeline.set_n_frames(ep.n_frames, ep.fps)
        self.timeline.set_curves(ep.curves())
        self._cache_curves()
        self._on_keyframes()
        self.timeline.select_segment(-1)
        self.player.set_episode(ep.n_frames, ep.fps, ep.depth_scale)
        self._update_3d_episode()
        self.browser.select(ep.path)
        auto_note = ""
        c = self.controller
        if c.annotator not in c.docs and len(c.doc):
            auto_note = " — starting from the automatic proposals"
        elif not len(c.doc):
            k = self.keymap.key_text   # the keys as the user has them (overrides included)
            auto_note = (f" — {ep.cannot_propose} ({k('fill_gap')} adds a segment, {k('split')} splits, "
                         f"{k('primitive_1')}–{k('primitive_9')} label)" if ep.cannot_propose
                         else f" — no segments yet: Propose segments ({k('propose')})")
        self._show_message(f"{ep.path.name}: {ep.n_frames} frames at {ep.fps:g} fps{auto_note}")
        self._update_enabled()
        self.timeline.setFocus()

    def _cache_curves(self) -> None:
        """Curves do not change while the playhead moves: keep them as cached pixmaps so a scrub
        repaints the playhead, not thousands of line segments (profiled: ~2/3 of the UI time per
        mouse event went into redrawing the three curves)."""
        for item in self.timeline.plot.getPlotItem().listDataItems():
            if isinstance(item, pg.PlotDataItem):
                item.setDownsampling(auto=True, method="peak")
                item.setClipToView(True)
                item.curve.setCacheMode(QtWidgets.QGraphicsItem.DeviceCoordinateCache)

    def _on_failed(self, path: Path, error: str) -> None:
        if self._opening == Path(path):
            self._opening = None
        self.browser.error_label.setText(error)
        self.browser.error_label.show()
        self._show_message(error)

    def _on_keyframes(self) -> None:
        ep = self.controller.episode
        if ep is None:
            return
        self.timeline.set_keyframes([f for f, _ in ep.keyframes], [k for _, k in ep.keyframes])
        self._update_3d_episode()

    def _on_segments(self) -> None:
        doc = self.controller.shown_doc()
        self.timeline.set_segments(doc.segments if doc is not None else [])
        self._refresh_inspector()
        self._refresh_views()
        self._update_enabled()

    def _refresh_views(self) -> None:
        c = self.controller
        self.view_combo.clear()
        for name in c.annotators():
            label = f"{name} (you)" if name == c.annotator else (
                f"{name} (proposals)" if name == "auto" else name)
            self.view_combo.addItem(label, name)
        self.view_combo.setCurrentIndex(max(0, self.view_combo.findData(c.view)))
        agr = c.agreement()
        if agr is None:
            self.agreement_label.setText("")
        else:
            alpha = "n/a" if agr["quality_alpha"] is None else f"{agr['quality_alpha']:.2f}"
            # Short, so it stays on one line in a 1280 px window; the tooltip says what the figures are.
            self.agreement_label.setText(
                f"Agreement with {agr['other']}: F1 <b>{agr['boundary_f1']:.2f}</b> · α <b>{alpha}</b>")
            self.agreement_label.setToolTip(
                f"Agreement with {agr['other']}: boundary F1 {agr['boundary_f1']:.2f} (boundaries within "
                f"±{agr['tol']} frames) · Krippendorff's α of quality scores {alpha}")

    def _set_view(self, name: str) -> None:
        if self.controller is not None and name:
            self.controller.set_view(name)
            self._update_enabled()

    def _refresh_inspector(self) -> None:
        c = self.controller
        doc = c.shown_doc() if c is not None else None
        i = self.timeline.selected_segment()
        seg = doc[i] if doc is not None and 0 <= i < len(doc) else None
        fps = c.episode.fps if c is not None and c.episode is not None else 0.0
        self.inspector.show_segment(i, seg, fps=fps, editable=c is not None and c.is_editable())
        self._refresh_suggestions()

    def _on_field_edited(self, index: int, name: str, value) -> None:
        if self.controller is not None:
            self.controller.set_field(index, name, value)
            self._refresh_inspector()   # a rejected edit shows the model's value again

    def _on_undo_index(self, _index: int) -> None:
        self._update_enabled()

    def _on_frame(self, frame: int) -> None:
        self.timeline.set_frame(frame)
        self.player.set_position(frame)
        if self.timeline._selected < 0:   # following the playhead: the segment under it
            self._refresh_inspector()

    def _on_frame_ready(self, frame: int, rgb, depth) -> None:
        self.player.show_frame(frame, rgb, depth)
        if self._showing_3d() and depth is not None and self._episode is not None:
            cam = self._episode_camera()
            if cam is not None:
                K, T, scale = cam
                self.scene3d.submit_frame(depth, rgb, scale, K, T, key=frame)

    # -- 3D page ---------------------------------------------------------------------------------

    def _showing_3d(self) -> bool:
        return self.scene3d is not None and self.view_tabs.currentIndex() == 1

    def _episode_camera(self):
        path = self._episode.path
        if self._camera3d is None or self._camera3d[0] != path:
            from widgets.scene3d_panel import episode_camera
            try:
                cam = episode_camera(path)
            except Exception as exc:   # unreadable camera meta: video still works, say why 3D is empty
                self._show_message(f"3D view: {exc}")
                cam = None
            self._camera3d = (path, cam)
        return self._camera3d[1]

    def build_3d_page(self) -> None:
        """The 3D page's view (the main window builds it before connecting: see _start_prebuild)."""
        preload.wait_imports()  # never import torch/diffusers/vispy beside the preload thread
        if self.scene3d is None:
            from widgets.scene3d_panel import Scene3DPanel
            self.scene3d = Scene3DPanel(self._scene3d_page)
            self._scene3d_page.layout().addWidget(self.scene3d)

    def _on_view_tab(self, index: int) -> None:
        if index == 1:
            self.build_3d_page()
        c = self.controller
        if c is not None:
            # The cloud needs depth; back on the video page the player's own mode decides again.
            c.set_depth_enabled(index == 1 or self.player.mode.currentText() != "rgb")
        self._update_3d_episode()

    def _update_3d_episode(self) -> None:
        if self._showing_3d() and self._episode is not None and self._episode.ee_pose is not None:
            self.scene3d.show_episode(self._episode)

    def _on_save_state(self, state: str, text: str) -> None:
        self.save_label.setText(text)
        self.save_label.setStyleSheet(f"color: {SAVE_COLORS.get(state, style.TEXT)};")
        self.busy.setVisible(state == "saving" and "first save" in text or bool(self.controller._busy))
        if state == "failed":
            self.statusMessage.emit(text)

    def _on_busy(self, text: str) -> None:
        self.busy.setVisible(bool(text))
        if text:
            self._show_message(text)
        self._update_enabled()

    def _show_message(self, text: str) -> None:
        self.message_label.setText(text)
        self.statusMessage.emit(text)

    def _update_enabled(self) -> None:
        c = self.controller
        has = c is not None and c.episode is not None
        editable = has and c.is_editable()
        self.propose_button.setEnabled(has and not c._busy)
        self.accept_button.setEnabled(editable and any(s.source == "auto" for s in c.doc.segments))
        self.view_combo.setEnabled(has)
        for name in ("split", "merge", "delete", "fill_gap", "accept_all", "accept_suggestion",
                     *[f"primitive_{i}" for i in range(1, 10)]):
            self._actions[name].setEnabled(editable if name != "accept_all" else self.accept_button.isEnabled())
        self._actions["undo"].setEnabled(editable)
        self._actions["redo"].setEnabled(editable)
        self._actions["propose"].setEnabled(self.propose_button.isEnabled())
