"""Collect tab: live RGB + depth, task and instruction, record controls, the dataset's episodes.

A view over ``app.collect_controller.CollectController``: buttons call its slots, its signals fill
the widgets. The camera view is fed at most at the controller's ~30 Hz poll, newest frame only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from app import preload
from app.collect_controller import CollectController, LiveStats
from recorder.dataset import EpisodeInfo
from widgets import style
from widgets.camera_view import CameraView

_RIGHT = QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter   # built once: enum "|" costs per call
OUTCOME_GLYPHS = {"success": ("✔", "#3bb273"), "failure": ("✘", style.ERROR),
                  "unknown": ("?", style.WARNING)}


class StatusText(QtWidgets.QWidget):
    """One line of status text ("● REC  12.3 s · 246 frames") with a coloured lead-in.

    Not a QLabel: ``QLabel.setText`` always calls ``updateGeometry``, and at the controller's
    30 Hz poll the layout requests it posted while recording re-laid out the Episode box, the
    left pane and the splitter, and repainted the whole Collect tab each time (bench/gui_collect.py:
    the window's update took ~13 ms of UI-thread CPU per poll, ~4 ms without it). This widget keeps
    one size for any text it shows, so a new text repaints only its own rectangle.
    """

    WIDEST = "● REC  9999.9 s · 99999 frames"   # sets the size; longer texts are elided

    def __init__(self, text: str = "", parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self._lead, self._lead_color, self._text = "", QtGui.QColor(style.ERROR), text
        self.setSizePolicy(QtWidgets.QSizePolicy.Expanding, QtWidgets.QSizePolicy.Fixed)

    def set_text(self, text: str, lead: str = "", lead_color: str = style.ERROR) -> None:
        """Show ``lead`` (in ``lead_color``) followed by ``text``; a no-op when nothing changed."""
        if (lead, text, lead_color) == (self._lead, self._text, self._lead_color.name()):
            return
        self._lead, self._text, self._lead_color = lead, text, QtGui.QColor(lead_color)
        self.update()

    def text(self) -> str:
        return f"{self._lead} {self._text}" if self._lead else self._text

    def sizeHint(self) -> QtCore.QSize:  # noqa: N802
        fm = self.fontMetrics()
        return QtCore.QSize(fm.horizontalAdvance(self.WIDEST) + 8, fm.height() + 6)

    def minimumSizeHint(self) -> QtCore.QSize:  # noqa: N802
        return self.sizeHint()

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:  # noqa: N802
        p = QtGui.QPainter(self)
        fm = p.fontMetrics()
        rect = self.rect().adjusted(2, 0, -2, 0)
        flags = QtCore.Qt.AlignLeft | QtCore.Qt.AlignVCenter
        if self._lead:
            p.setPen(self._lead_color)
            p.drawText(rect, flags, self._lead)
            rect.setLeft(rect.left() + fm.horizontalAdvance(self._lead + " "))
        p.setPen(self.palette().color(QtGui.QPalette.WindowText))
        p.drawText(rect, flags, fm.elidedText(self._text, QtCore.Qt.ElideRight, max(0, rect.width())))
        p.end()


class EpisodeList(QtWidgets.QTreeWidget):
    """Episodes of the dataset: outcome icon, name, frames, duration; bad files in red (tooltip = why)."""

    COLUMNS = ("", "Episode", "Frames", "Seconds", "Task")

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("episode_list")
        self.setColumnCount(len(self.COLUMNS))
        self.setHeaderLabels(list(self.COLUMNS))
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(True)
        self.setSortingEnabled(False)
        h = self.header()
        h.setStretchLastSection(False)
        h.setSectionResizeMode(0, QtWidgets.QHeaderView.Fixed)
        self.setColumnWidth(0, 26)
        h.setSectionResizeMode(1, QtWidgets.QHeaderView.Stretch)
        for c in (2, 3, 4):
            h.setSectionResizeMode(c, QtWidgets.QHeaderView.ResizeToContents)
        self._shown: list[EpisodeInfo] = []   # what the rows show, in order

    def set_episodes(self, episodes: list[EpisodeInfo]) -> None:
        """Show the dataset's episodes. Called after every save: rows already shown are kept
        (only changed ones refilled) and new ones appended in one batch: rebuilding 200 rows
        held the UI thread ~250 ms on the shared box, after every saved episode."""
        episodes = list(episodes)
        shown = self._shown
        common = min(len(shown), len(episodes))
        if [e.path for e in shown[:common]] != [e.path for e in episodes[:common]]:
            self.clear()
            shown = []
        self.setUpdatesEnabled(False)
        try:
            for i, (old, ep) in enumerate(zip(shown, episodes)):
                if old != ep:   # a fresh item: a bad row turned good must lose its red
                    self.takeTopLevelItem(i)
                    self.insertTopLevelItem(i, self._item(ep))
            for _ in range(self.topLevelItemCount() - len(episodes)):
                self.takeTopLevelItem(len(episodes))
            new = [self._item(ep) for ep in episodes[len(shown):]]
            self.addTopLevelItems(new)
        finally:
            self.setUpdatesEnabled(True)
        self._shown = episodes
        if new:
            self.scrollToItem(self.topLevelItem(len(episodes) - 1))

    def _item(self, ep: EpisodeInfo) -> QtWidgets.QTreeWidgetItem:
        if ep.ok:
            glyph, color = OUTCOME_GLYPHS.get(ep.outcome, ("?", style.WARNING))
            item = QtWidgets.QTreeWidgetItem([glyph, ep.name, str(ep.n_frames), f"{ep.duration:.1f}", ep.task])
            item.setForeground(0, QtGui.QBrush(QtGui.QColor(color)))
            tip = ep.line() + (f"\n{ep.instruction}" if ep.instruction else "")
            for c in range(self.columnCount()):
                item.setToolTip(c, tip)
            for c in (2, 3):
                item.setTextAlignment(c, _RIGHT)
        else:
            item = QtWidgets.QTreeWidgetItem(["!", ep.name, "", "", ""])
            red = QtGui.QBrush(QtGui.QColor(style.ERROR))
            for c in range(self.columnCount()):
                item.setForeground(c, red)
                item.setToolTip(c, ep.error)
        item.setData(1, QtCore.Qt.UserRole, str(ep.path))
        item.setData(0, QtCore.Qt.UserRole, ep.outcome if ep.ok else "bad")
        return item

    def names(self) -> list[str]:
        return [self.topLevelItem(i).text(1) for i in range(self.topLevelItemCount())]

    def row(self, name: str) -> dict | None:
        for i in range(self.topLevelItemCount()):
            it = self.topLevelItem(i)
            if it.text(1) == name:
                return {"outcome": it.data(0, QtCore.Qt.UserRole), "tooltip": it.toolTip(1),
                        "color": it.foreground(1).color().name()}
        return None


class CollectTab(QtWidgets.QWidget):
    chooseDatasetRequested = QtCore.Signal()

    def __init__(self, controller: CollectController, tasks: dict[str, str],
                 parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        self.tasks = dict(tasks)

        self.camera_view = CameraView(title="scene camera")
        self.camera_view.setObjectName("camera_view")
        self.camera_view.set_mode("both")
        self.camera_view.setMinimumSize(640, 260)
        self.camera_view.setFocusPolicy(QtCore.Qt.StrongFocus)  # click the image to drive with the keyboard

        # ---- task + controls
        self.task = QtWidgets.QComboBox()
        self.task.setObjectName("task")
        self.task.setEditable(True)
        self.task.addItems(list(self.tasks))
        self.task.setToolTip("task name stored in each episode (sim tasks also reset the scene)")
        self.instruction = QtWidgets.QLineEdit()
        self.instruction.setObjectName("instruction")
        self.instruction.setPlaceholderText("language instruction (empty: the task's own)")
        self.task.currentTextChanged.connect(self._on_task_changed)
        self.task.currentTextChanged.connect(self._push_task)
        self.instruction.textChanged.connect(self._push_task)

        self.record_button = QtWidgets.QPushButton("● Record")
        self.record_button.setObjectName("record_button")
        self.record_button.setCheckable(True)
        self.record_button.setMinimumHeight(36)
        self.record_button.setToolTip("start / stop recording (F5, or the input device's record button)")
        self.record_button.clicked.connect(self._on_record_clicked)
        self.scripted_button = QtWidgets.QPushButton("▶ Run scripted episode")
        self.scripted_button.setObjectName("scripted_button")
        self.scripted_button.setMinimumHeight(36)
        self.scripted_button.setToolTip("sim: reset with the next seed and record the scripted operator (F6)")
        self.scripted_button.clicked.connect(controller.run_scripted_episode)
        self.reset_button = QtWidgets.QPushButton("⟲ New layout")
        self.reset_button.setObjectName("reset_scene_button")
        self.reset_button.setMinimumHeight(36)
        self.reset_button.setToolTip("sim: randomise the scene with the next seed and home the arm")
        self.reset_button.clicked.connect(controller.reset_scene)
        self.rec_status = StatusText("not recording")
        self.rec_status.setObjectName("rec_status")

        form = QtWidgets.QFormLayout()
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.AllNonFixedFieldsGrow)
        form.addRow("Task", self.task)
        form.addRow("Instruction", self.instruction)
        buttons = QtWidgets.QHBoxLayout()
        for b in (self.record_button, self.scripted_button, self.reset_button):
            buttons.addWidget(b)
        buttons.addSpacing(12)
        buttons.addWidget(self.rec_status, 1)
        controls = QtWidgets.QGroupBox("Episode")
        cl = QtWidgets.QVBoxLayout(controls)
        cl.addLayout(form)
        cl.addLayout(buttons)

        left = QtWidgets.QWidget()
        ll = QtWidgets.QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        # "Video | 3D": the GL view is built on first use, so offscreen runs never need a GL context.
        self.view_tabs = QtWidgets.QTabWidget()
        self.view_tabs.setObjectName("view_tabs")
        self.view_tabs.setDocumentMode(True)
        self.view_tabs.addTab(self.camera_view, "Video")
        self._scene3d_page = QtWidgets.QWidget()
        QtWidgets.QVBoxLayout(self._scene3d_page).setContentsMargins(0, 0, 0, 0)
        self.view_tabs.addTab(self._scene3d_page, "3D")
        self.view_tabs.currentChanged.connect(self._on_view_tab)
        self.scene3d = None          # widgets.scene3d_panel.Scene3DPanel once the 3D page was opened
        self._trail = None
        ll.addWidget(self.view_tabs, 1)
        ll.addWidget(controls)

        # ---- dataset panel
        self.dataset_label = QtWidgets.QLabel("no dataset")
        self.dataset_label.setObjectName("dataset_label")
        self.dataset_label.setWordWrap(True)
        self.dataset_label.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        open_button = QtWidgets.QPushButton("Open…")
        open_button.setToolTip("choose the dataset folder (Ctrl+O)")
        open_button.clicked.connect(self.chooseDatasetRequested)
        self.summary = QtWidgets.QLabel("")
        self.summary.setStyleSheet(f"color: {style.TEXT_DIM}")
        self.episode_list = EpisodeList()
        right = QtWidgets.QGroupBox("Dataset")
        rl = QtWidgets.QVBoxLayout(right)
        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.dataset_label, 1)
        top.addWidget(open_button)
        rl.addLayout(top)
        rl.addWidget(self.episode_list, 1)
        rl.addWidget(self.summary)

        split = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setChildrenCollapsible(False)
        right.setMinimumWidth(320)
        self.splitter = split
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(split)

        c = controller
        c.frameReady.connect(self._on_frame)
        c.statsChanged.connect(self._on_stats)
        c.recordingChanged.connect(self._update_enabled)
        c.scriptedChanged.connect(self._update_enabled)
        c.connectedChanged.connect(self._update_enabled)
        c.busyChanged.connect(lambda *_: self._update_enabled())
        c.estopChanged.connect(self._update_enabled)
        c.episodesChanged.connect(self._on_episodes)
        c.datasetChanged.connect(self._on_dataset)
        self._update_enabled()

    # ---------------------------------------------------------------- inputs
    def _on_task_changed(self, name: str) -> None:
        self.instruction.setPlaceholderText(self.tasks.get(name) or "language instruction")

    def _push_task(self, *_) -> None:
        self.controller.set_task(self.task.currentText(), self.instruction.text())

    def set_task(self, task: str, instruction: str) -> None:
        self.task.setCurrentText(task)
        self.instruction.setText(instruction)
        self._push_task()

    def _on_record_clicked(self) -> None:
        self.controller.toggle_recording()
        self._update_enabled()  # the checked state follows the controller, not the click

    # ---------------------------------------------------------------- controller feedback
    def _on_frame(self, frame) -> None:
        if self.scene3d is not None and self.view_tabs.currentIndex() == 1:
            self._feed_3d(frame)
            return
        self.camera_view.set_frame(frame.rgb, frame.depth, depth_scale=frame.depth_scale,
                                   label=f"frame {frame.index}")

    def build_3d_page(self) -> None:
        """The 3D page's view (the main window builds it before connecting: see _start_prebuild)."""
        preload.wait_imports()  # never import torch/diffusers/vispy beside the preload thread
        if self.scene3d is not None:
            return
        from widgets.scene3d_panel import Scene3DPanel, TrailBuffer

        self.scene3d = Scene3DPanel(self._scene3d_page)
        self._scene3d_page.layout().addWidget(self.scene3d)
        self._trail = TrailBuffer(10.0)
        self._crop_for = None  # the arm whose workspace the crop shows

    def _on_view_tab(self, index: int) -> None:
        if index != 1:
            return
        self.build_3d_page()
        session = self.controller.session
        arm = getattr(session, "arm", None)
        limits = getattr(arm, "limits", None)
        if limits is not None and self._crop_for is not arm:
            # The table (z = 0) is usually just below the EE workspace: keep it in view.
            self._crop_for = arm
            lo = np.minimum(np.asarray(limits.workspace.lo, float) - 0.05, [np.inf, np.inf, -0.02])
            self.scene3d.set_crop(lo, np.asarray(limits.workspace.hi, float) + 0.05)

    def _feed_3d(self, frame) -> None:
        # The control loop's newest tick carries the arm state that goes with the frame.
        tick = getattr(self.controller, "_latest", None)
        if tick is not None:
            self._trail.add(tick.state.stamp, tick.state.ee_pose)
            self.scene3d.set_trajectory(self._trail.points())
        self.scene3d.submit_rgbd(frame)

    def shutdown_3d(self) -> None:
        if self.scene3d is not None:
            self.scene3d.shutdown()

    def _on_stats(self, st: LiveStats) -> None:
        self.camera_view.set_dropped(st.dropped, st.lag)
        if st.awaiting_outcome:
            # The take has ended: its duration stays put while the operator answers the dialog.
            self.rec_status.set_text(f"{st.seconds:5.1f} s · {st.frames} frames · outcome?", lead="■",
                                     lead_color=style.TEXT_DIM)
        elif st.recording:
            self.rec_status.set_text(f"{st.seconds:5.1f} s · {st.frames} frames", lead="● REC")
        elif self.controller.connected:
            self.rec_status.set_text("E-stopped" if st.estopped else "ready")
        else:
            self.rec_status.set_text("not connected")

    def _on_episodes(self, episodes: list[EpisodeInfo]) -> None:
        self.episode_list.set_episodes(episodes)
        ok = [e for e in episodes if e.ok]
        n_s = sum(e.outcome == "success" for e in ok)
        n_f = sum(e.outcome == "failure" for e in ok)
        bad = len(episodes) - len(ok)
        self.summary.setText(f"{len(ok)} episodes · {n_s} success · {n_f} failure"
                             + (f" · {bad} unreadable" if bad else ""))

    def _on_dataset(self, folder: str) -> None:
        self.dataset_label.setText(folder)
        self.dataset_label.setToolTip(folder)

    def _update_enabled(self, *_) -> None:
        c = self.controller
        idle = c.connected and not c.busy and not c.estopped
        self.record_button.setChecked(c.recording)
        self.record_button.setText("■ Stop" if c.recording else "● Record")
        self.record_button.setEnabled(c.connected and (c.recording or idle))
        self.scripted_button.setEnabled(idle and c.is_sim and not c.recording)
        self.reset_button.setEnabled(idle and c.is_sim and not c.recording)
        self.task.setEnabled(not c.recording)
        self.instruction.setEnabled(not c.recording)

    def dataset_folder(self) -> Path | None:
        return self.controller.dataset_folder
