"""ActStudio main window: menus, toolbar, device bar with E-STOP, status bar, Collect | Annotate | Train |
Evaluate tabs.

Behaviour lives in ``app.collect_controller.CollectController``; this window wires its signals to
views and dialogs, forwards keys to a keyboard teleop input, and persists settings.
Actions and their keys come from the one registry, app/actions.py (Help › Keyboard shortcuts… lists
and changes them): Esc E-STOP (application-wide), F5 record start/stop, F6 scripted episode, F7 new
layout, Ctrl+K connect/disconnect, Ctrl+O open dataset, Ctrl+Shift+R recover, Ctrl+Shift+H home.

Size (~570 lines): the window's menus, tabs, device bar and dialogs wired to the controllers;
no logic of its own beyond routing (keys come from app/actions.py).
"""
from __future__ import annotations

import logging
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from app import preload
from app.collect_controller import CollectController, OutcomeRequest, task_catalog
from app.lab_settings import load_lab_config
from app.settings import Settings
from widgets import style
from widgets.collect_tab import CollectTab
from widgets.device_bar import DeviceBar
from widgets.dialogs import OutcomeDialog, RecoveryDialog, show_error
from widgets.shortcuts import ShortcutsDialog, hint_button, hint_tooltip, keymap_for, make_action

log = logging.getLogger(__name__)

DEFAULT_DATASET = Path.home() / "ActStudio" / "datasets" / "default"
# Keys that never go to the keyboard teleop input while a text field has focus.
_TEXT_WIDGETS = (QtWidgets.QLineEdit, QtWidgets.QPlainTextEdit, QtWidgets.QTextEdit,
                 QtWidgets.QAbstractSpinBox)


def apply_theme(app: QtWidgets.QApplication) -> None:
    """Fusion + the dark palette of widgets/style.py, so every tab looks like one tool."""
    app.setStyle("Fusion")
    pal = QtGui.QPalette()
    c = QtGui.QColor
    for role, color in ((QtGui.QPalette.Window, style.BACKGROUND), (QtGui.QPalette.Base, "#1a1d22"),
                        (QtGui.QPalette.AlternateBase, style.PANEL), (QtGui.QPalette.Button, style.PANEL),
                        (QtGui.QPalette.WindowText, style.TEXT), (QtGui.QPalette.Text, style.TEXT),
                        (QtGui.QPalette.ButtonText, style.TEXT), (QtGui.QPalette.ToolTipBase, style.PANEL),
                        (QtGui.QPalette.ToolTipText, style.TEXT), (QtGui.QPalette.Highlight, style.ACCENT),
                        (QtGui.QPalette.HighlightedText, "#ffffff"), (QtGui.QPalette.PlaceholderText, style.TEXT_DIM)):
        pal.setColor(role, c(color))
    for role in (QtGui.QPalette.WindowText, QtGui.QPalette.Text, QtGui.QPalette.ButtonText):
        pal.setColor(QtGui.QPalette.Disabled, role, c("#5c6370"))
    app.setPalette(pal)
    app.setStyleSheet(f"""
        QPushButton#estop_button {{ background: #c62828; color: white; font-weight: bold; font-size: 15px;
            border: 2px solid #ff8a80; border-radius: 6px; padding: 4px 14px; }}
        QPushButton#estop_button:pressed {{ background: #8e0000; }}
        QPushButton#record_button:checked {{ background: #8e2430; color: white; font-weight: bold; }}
        QFrame#device_bar {{ background: {style.PANEL}; border-bottom: 1px solid {style.GRID}; }}
        QGroupBox {{ border: 1px solid {style.GRID}; border-radius: 4px; margin-top: 14px; padding-top: 6px; }}
        QGroupBox::title {{ subcontrol-origin: margin; left: 8px; padding: 0 4px; color: {style.TEXT_DIM}; }}
        QStatusBar {{ border-top: 1px solid {style.GRID}; }}
        QTabBar::tab {{ padding: 6px 18px; }}
    """)


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, settings: Settings | None = None, *, controller: CollectController | None = None,
                 dataset: str | Path | None = None, devices: tuple[str, str, str, float] | None = None,
                 parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        # torch / vispy for the tabs' 3D pages and policies, imported off the UI thread now and
        # finished before the control loop starts (app/preload.py: a first import while connected
        # stalled the loop and dropped camera frames).
        preload.start()
        self.setWindowTitle("ActStudio")
        self.settings = settings or Settings()
        self.keymap = keymap_for(self.settings)   # the action registry with the user's overrides
        self.controller = controller or CollectController(self, operator=self.settings.get("collect/operator"))
        self.controller.next_seed = self.settings.get("collect/next_seed")
        self.outcome_dialog: OutcomeDialog | None = None
        self.lab_settings_dialog = None
        self.recovery_dialog: RecoveryDialog | None = None
        self.calibration_dialog = None
        self.shortcuts_dialog: ShortcutsDialog | None = None
        self.error_box: QtWidgets.QMessageBox | None = None
        self._closing = False
        # The Annotate tab shows the dataset Collect records into: it is (re)opened or rescanned
        # when the tab is looked at and Collect's folder or episodes changed since (issue 12: it
        # showed "No dataset" / a stale list after recording).
        self._annotate_synced: tuple | None = None   # (folder, episode signature) the tab shows
        self._annotate_timer = QtCore.QTimer(self)
        self._annotate_timer.setSingleShot(True)    # datasetChanged + episodesChanged arrive together
        self._annotate_timer.setInterval(0)

        self.device_bar = DeviceBar()
        self.device_bar.set_values(*(devices or (self.settings.get("devices/robot"), self.settings.get("devices/camera"),
                                                 self.settings.get("devices/input"), self.settings.get("devices/rate_hz"))))
        self.collect_tab = CollectTab(self.controller, task_catalog())
        self.collect_tab.set_task(self.settings.get("collect/task"), self.settings.get("collect/instruction"))
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.setObjectName("tabs")
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.collect_tab, "Collect")
        self.annotate_tab = self._make_optional_tab("Annotate", "widgets.annotate_tab", "AnnotateTab")
        self.train_tab = self._make_optional_tab("Train", "widgets.train_tab", "TrainTab")
        self.evaluate_tab = self._make_optional_tab("Evaluate", "widgets.evaluate_tab", "EvaluateTab")
        self._wire_train_tab()

        central = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.device_bar)
        lay.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

        self.dataset_status = QtWidgets.QLabel("")
        self.dataset_status.setStyleSheet(f"color: {style.TEXT_DIM}")
        self.statusBar().addPermanentWidget(self.dataset_status)
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._wire()

        geometry = self.settings.get("window/geometry")
        if geometry is not None and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(self.sizeHint())
        state = self.settings.get("window/state")
        if state is not None and not state.isEmpty():
            self.restoreState(state)
        self.tabs.setCurrentIndex(min(self.settings.get("window/tab"), self.tabs.count() - 1))

        self._start_prebuild()
        QtWidgets.QApplication.instance().installEventFilter(self)
        folder = Path(dataset) if dataset else Path(self.settings.get("dataset/folder") or DEFAULT_DATASET)
        self.open_dataset(folder)
        self.statusBar().showMessage(f"Pick devices and press Connect ({self.keymap.key_text('connect')})", 8000)

    # ================================================================== construction
    PREFERRED_SIZE = QtCore.QSize(1480, 900)

    def sizeHint(self) -> QtCore.QSize:  # noqa: N802
        """The first window: 1480 × 900 where the screen has room, else the screen's free area
        (a laptop's 1280 × 800), never below what the tabs need. Qt's own hint is the tabs'
        preferred sizes stacked (~1120 × 1220), taller than most screens."""
        size = QtCore.QSize(self.PREFERRED_SIZE)
        screen = self.screen() or QtGui.QGuiApplication.primaryScreen()
        if screen is not None:
            size = size.boundedTo(screen.availableGeometry().size())
        return size.expandedTo(self.minimumSizeHint())

    def _make_optional_tab(self, title: str, module: str, cls: str):
        """A tab whose failure to load must not take the window down (collecting keeps working):
        on an error it becomes a dimmed label with the one-line cause."""
        try:
            import importlib

            tab = getattr(importlib.import_module(module), cls)(self.settings, self)
        except Exception as exc:
            log.exception("%s tab failed to load", title)
            label = QtWidgets.QLabel(f"{title} — not available\n\n{type(exc).__name__}: {exc}")
            label.setAlignment(QtCore.Qt.AlignCenter)
            label.setStyleSheet(f"color: {style.TEXT_DIM}")
            self.tabs.addTab(label, title)
            return None
        self.tabs.addTab(tab, title)
        return tab

    def _start_prebuild(self) -> None:
        """Build the tabs' 3D pages before any control loop runs (they used to be built on first
        view: ~0.3 s of UI-thread work each, with the GIL held, which stalled a running loop).
        One page per timer turn once the preloaded imports are in, so the window stays live; a
        connect waits for the gate (app/preload.py) after its devices opened."""
        self._prebuild = [tab.build_3d_page for tab in (self.collect_tab, self.annotate_tab, self.evaluate_tab)
                          if tab is not None and hasattr(tab, "build_3d_page")]
        self._prebuild_gate = preload.gate()
        self._prebuild_timer = QtCore.QTimer(self)
        self._prebuild_timer.setInterval(30)
        self._prebuild_timer.timeout.connect(self._prebuild_step)
        self._prebuild_timer.start()

    def _prebuild_step(self) -> None:
        if not preload.imports_done():
            return
        if self._prebuild:
            build = self._prebuild.pop(0)
            try:
                build()
            except Exception:  # the page then says why when opened; collecting keeps working
                log.exception("building %r failed", build)
            return
        self._prebuild_timer.stop()
        self._prebuild_gate.set()

    def _wire_train_tab(self) -> None:
        """A finished run's checkpoint goes to Evaluate (expert) or to Annotate's suggestions (encoder)."""
        if self.train_tab is None:
            return

        def evaluate(path: str) -> None:
            if self.evaluate_tab is not None:
                self.evaluate_tab.checkpoint.setText(path)
                self.tabs.setCurrentWidget(self.evaluate_tab)

        def suggest_with(path: str) -> None:
            if self.annotate_tab is not None and hasattr(self.annotate_tab, "set_encoder"):
                self.annotate_tab.set_encoder(path)
                self.tabs.setCurrentWidget(self.annotate_tab)

        self.train_tab.openInEvaluate.connect(evaluate)
        self.train_tab.useEncoder.connect(suggest_with)

    def _action(self, name: str) -> QtGui.QAction:
        """The QAction of registry action ``name`` (app/actions.py) over this window; its keys follow
        the user's overrides and work even when the menu bar is hidden."""
        return make_action(self.keymap, name, self, self)

    def _build_actions(self) -> None:
        self.act_open = self._action("open_dataset")
        self.act_refresh = self._action("refresh_episodes")
        self.act_quit = self._action("quit")
        self.act_connect = self._action("connect")
        self.act_estop = self._action("estop")   # ApplicationShortcut; eventFilter catches the rest
        self.act_reset_estop = self._action("reset_estop")
        self.act_recover = self._action("recover")
        self.act_home = self._action("home")
        self.act_lab_settings = self._action("lab_settings")
        self.act_record = self._action("record")
        self.act_scripted = self._action("scripted_episode")
        self.act_reset_scene = self._action("new_layout")
        self.act_calibrate = self._action("calibrate")
        self.act_shortcuts = self._action("shortcuts")
        self.act_about = self._action("about")
        # The buttons name the keys the registry gives them (an override renames them).
        bar = self.device_bar
        hint_button(self.keymap, bar.recover_button, "recover", "Recover")
        hint_tooltip(self.keymap, bar.home_button, "home",
                     "Move the arm to its home configuration ({key})")
        hint_tooltip(self.keymap, self.collect_tab.record_button, "record",
                     "start / stop recording ({key}, or the input device's record button)")
        hint_tooltip(self.keymap, self.collect_tab.scripted_button, "scripted_episode",
                     "sim: reset with the next seed and record the scripted operator ({key})")

    def _build_menus(self) -> None:
        mb = self.menuBar()
        m = mb.addMenu("&File")
        for a in (self.act_open, self.act_refresh, None, self.act_quit):
            m.addSeparator() if a is None else m.addAction(a)
        m = mb.addMenu("&Devices")
        for a in (self.act_connect, None, self.act_estop, self.act_reset_estop, None, self.act_recover,
                  self.act_home, None, self.act_lab_settings):
            m.addSeparator() if a is None else m.addAction(a)
        m = mb.addMenu("&Record")
        for a in (self.act_record, self.act_scripted, self.act_reset_scene):
            m.addAction(a)
        if self.annotate_tab is not None and hasattr(self.annotate_tab, "menu_actions"):
            m = mb.addMenu("&Annotate")
            for a in self.annotate_tab.menu_actions():
                m.addAction(a)
        m = mb.addMenu("&Tools")
        m.addAction(self.act_calibrate)
        m = mb.addMenu("&Help")
        m.addAction(self.act_shortcuts)
        m.addAction(self.act_about)

    def _build_toolbar(self) -> None:
        tb = self.addToolBar("Main")
        tb.setObjectName("main_toolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(QtCore.Qt.ToolButtonTextOnly)
        for a in (self.act_open, None, self.act_connect, None, self.act_record, self.act_scripted,
                  self.act_reset_scene):
            tb.addSeparator() if a is None else tb.addAction(a)

    def _wire(self) -> None:
        c, bar = self.controller, self.device_bar
        bar.connectRequested.connect(self._on_connect_requested)
        bar.disconnectRequested.connect(c.disconnect_devices)
        bar.estopRequested.connect(c.estop)
        bar.resetEstopRequested.connect(c.reset_estop)
        bar.recoverRequested.connect(c.recover)
        bar.homeRequested.connect(c.home)
        c.faultChanged.connect(self._on_fault)
        bar.invalidUri.connect(self.show_error)
        bar.calibrateRequested.connect(self.open_calibration)
        c.busyChanged.connect(self._on_busy)
        c.connectedChanged.connect(self._on_connected)
        c.errorOccurred.connect(self.show_error)
        c.message.connect(lambda m: self.statusBar().showMessage(m, 6000))
        c.lightsChanged.connect(bar.set_lights)
        c.statsChanged.connect(bar.set_stats)
        c.estopChanged.connect(self._on_estop)
        c.outcomeRequested.connect(self.ask_outcome)
        c.recoveryNeeded.connect(self.ask_recovery)
        c.datasetChanged.connect(self._on_dataset)
        c.episodesChanged.connect(lambda eps: self.dataset_status.setText(
            f"{Path(c.dataset_folder).name if c.dataset_folder else ''} · {len(eps)} episodes"))
        c.episodesChanged.connect(lambda _eps: self._annotate_timer.start())
        self._annotate_timer.timeout.connect(self._sync_annotate)
        c.recordingChanged.connect(self._update_actions)
        c.scriptedChanged.connect(self._update_actions)
        self.collect_tab.chooseDatasetRequested.connect(self.choose_dataset)
        self.tabs.currentChanged.connect(self._sync_annotate)
        self._update_actions()

    # ================================================================== slots
    def _on_connect_requested(self, robot: str, camera: str, inp: str, rate: float) -> None:
        self._save_devices(robot, camera, inp, rate)
        try:
            lab = load_lab_config(robot, self.settings)
        except ValueError as exc:
            self.show_error(f"lab settings: {exc}")
            return
        self.controller.connect_devices(robot, camera, inp, rate, lab=lab)

    def _save_devices(self, robot: str, camera: str, inp: str, rate: float) -> None:
        for key, value in (("devices/robot", robot), ("devices/camera", camera), ("devices/input", inp),
                           ("devices/rate_hz", rate)):
            self.settings.set(key, value)

    def _on_busy(self, busy: bool, what: str) -> None:
        if what.startswith(("connecting", "disconnecting", "homing", "recovering")) or not busy:
            self.device_bar.set_busy(busy, what)
        if busy:
            self.statusBar().showMessage(what[:1].upper() + what[1:] + " …")
        self._update_actions()

    def _on_connected(self, connected: bool) -> None:
        self.device_bar.set_connected(connected)
        if connected and self.controller.input_kind() == "keyboard":
            # Keys typed into the task field are text, not motion: start with the image focused.
            self.collect_tab.camera_view.setFocus()
            self.statusBar().showMessage("keyboard teleop: click the camera image, then W/S A/D R/F Q/E, "
                                         "arrows, Space = gripper, Enter = record", 10000)
        self.act_connect.setText("Dis&connect" if connected else "&Connect")
        self._update_calibration_badge()
        self._update_actions()

    def _on_fault(self, reason: str) -> None:
        self.device_bar.set_fault(reason)
        if reason:
            self.statusBar().showMessage(f"Robot fault: {reason} — remove the cause, then Recover "
                                         f"({self.keymap.key_text('recover')})", 15000)
        self._update_actions()

    def show_lab_settings(self) -> None:
        from widgets.lab_settings_dialog import LabSettingsDialog

        dlg = LabSettingsDialog(self.settings, self.device_bar.values()[0], self)
        dlg.setAttribute(QtCore.Qt.WA_DeleteOnClose, True)
        dlg.accepted.connect(lambda: self.statusBar().showMessage(
            "lab settings saved; they apply at the next Connect", 8000))
        self.lab_settings_dialog = dlg
        dlg.open()

    def _on_estop(self, on: bool) -> None:
        self.device_bar.set_estopped(on)
        self._update_actions()

    def _on_dataset(self, folder: str) -> None:
        self.settings.set("dataset/folder", folder)
        self._annotate_timer.start()

    def _sync_annotate(self, *_) -> None:
        # Only when the tab is looked at: opening it may ask for the annotator's name, which a
        # person who only collects should never be asked at start-up.
        tab, c = self.annotate_tab, self.controller
        if tab is None or c.dataset_folder is None or self.tabs.currentWidget() is not tab:
            return
        folder = Path(c.dataset_folder)
        episodes = tuple((e.path, e.n_frames, e.outcome, e.ok) for e in c.episodes)
        shown = self._annotate_synced
        if shown == (folder, episodes):
            return
        try:
            if shown is None or shown[0] != folder or tab.dataset_folder() != folder:
                tab.set_dataset(folder)
            else:
                tab.refresh()
        except Exception as exc:  # the Collect side must keep working whatever the other tab does
            self.show_error(f"Annotate tab: {exc}")
            return   # tried again the next time the tab is looked at
        self._annotate_synced = (folder, episodes)

    def _update_actions(self, *_) -> None:
        c = self.controller
        idle = c.connected and not c.busy and not c.estopped
        self.act_record.setEnabled(c.connected and (c.recording or (idle and not c.fault)))
        self.act_scripted.setEnabled(idle and c.is_sim and not c.recording and not c.fault)
        self.act_reset_scene.setEnabled(idle and c.is_sim and not c.recording)
        self.act_reset_estop.setEnabled(c.estopped)
        self.act_recover.setEnabled(c.connected and not c.estopped)
        self.act_home.setEnabled(idle and not c.recording)
        self.device_bar.home_button.setEnabled(idle and not c.recording)
        self.device_bar.recover_button.setEnabled(c.connected and not c.estopped)
        self.act_calibrate.setEnabled(idle and not c.recording)
        self.act_open.setEnabled(not c.recording)

    # ================================================================== camera calibration
    def _update_calibration_badge(self) -> None:
        session = self.controller.session
        camera = session.camera if session is not None else None
        # Cameras that do not say (bag playback of the sim, future drivers) are not flagged.
        self.device_bar.set_camera_calibrated(None if camera is None else bool(getattr(camera, "calibrated", True)))

    def open_calibration(self) -> None:
        """Tools > Calibrate camera…: lend the arm and camera to the dialog (teleop paused) until it closes."""
        from widgets.calibration_dialog import CalibrationDialog

        session = self.controller.session
        if session is not None and session.camera is None:
            self.show_error("cannot calibrate: no camera connected (camera 'none')")
            return
        session = self.controller.lend_devices("calibrating the camera")
        if session is None:
            return
        try:
            dlg = CalibrationDialog(session.arm, session.camera, lab=session.lab, robot=str(session.robot_uri),
                                    parent=self)
        except Exception as exc:
            self.controller.return_devices()
            self.show_error(f"cannot open the calibration dialog: {exc}")
            return
        self.calibration_dialog = dlg
        self.controller.estopChanged.connect(dlg.cancel_run)  # E-STOP also ends the pose sequence

        def closed(_result: int) -> None:
            self.calibration_dialog = None
            self.controller.return_devices()
            self._update_calibration_badge()

        dlg.finished.connect(closed)
        dlg.open()

    def show_error(self, message: str) -> None:
        line = (message or "").strip().splitlines()[0] if message else "unknown error"
        self.statusBar().showMessage(f"Error: {line}", 15000)
        if self._closing:
            return
        if self.error_box is not None and self.error_box.isVisible():
            self.error_box.setText(line)  # one box at a time: repeated faults must not pile up windows
            return
        self.error_box = box = show_error(self, line)
        box.destroyed.connect(lambda *_: setattr(self, "error_box", None) if self.error_box is box else None)

    def ask_outcome(self, request: OutcomeRequest) -> None:
        dlg = OutcomeDialog(request, self)
        dlg.setAttribute(QtCore.Qt.WA_DeleteOnClose, True)
        dlg.answered.connect(self.controller.resolve_outcome)
        dlg.finished.connect(lambda *_: setattr(self, "outcome_dialog", None))
        self.outcome_dialog = dlg
        dlg.open()

    def ask_recovery(self, paths: list[Path]) -> None:
        dlg = RecoveryDialog(paths, self)
        self.recovery_dialog = dlg

        def on_done(*_):
            choice = dlg.choice()
            self.recovery_dialog = None
            if choice == "recover":
                self.controller.recover_partials(paths)
            elif choice == "discard":
                self.controller.discard_partials(paths)
            else:
                self.statusBar().showMessage("crashed episodes left as they are; they are recovered on the next start", 8000)
            dlg.deleteLater()

        dlg.finished.connect(on_done)
        dlg.open()

    def choose_dataset(self) -> None:
        start = str(self.controller.dataset_folder or DEFAULT_DATASET)
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Dataset folder", start)
        if folder:
            self.open_dataset(Path(folder))

    def open_dataset(self, folder: Path) -> None:
        self.controller.set_dataset(folder)

    def show_shortcuts(self) -> None:
        """Help › Keyboard shortcuts…: every action of the registry, searchable, keys changeable."""
        if self.shortcuts_dialog is None:
            self.shortcuts_dialog = ShortcutsDialog(self.keymap, self)
        self.shortcuts_dialog.show()
        self.shortcuts_dialog.raise_()

    def show_about(self) -> None:
        from app.config import APP_VERSION

        QtWidgets.QMessageBox.about(self, "About ActStudio",
                                    f"ActStudio {APP_VERSION}<br>Collect, annotate and learn robot demonstrations.")

    # ================================================================== keys → keyboard teleop
    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        et = event.type()
        if et == QtCore.QEvent.KeyPress and event.key() == QtCore.Qt.Key_Escape and not self._closing:
            # Esc reached a widget instead of the E-STOP shortcut: a field that claims Esc, a dialog,
            # or no active window (shortcuts need one). The e-stop must fire anyway.
            self.controller.estop()
            return True
        if et in (QtCore.QEvent.KeyPress, QtCore.QEvent.KeyRelease) and self.controller.input_kind() == "keyboard":
            if event.isAutoRepeat() or not self.isActiveWindow():
                return False
            if isinstance(obj, _TEXT_WIDGETS) or not isinstance(obj, QtWidgets.QWidget) or obj.window() is not self:
                return False  # typing into a field, or a dialog of ours (the outcome dialog's S/F/D)
            key = _key_name(event)
            if key and self.controller.key_event(key, et == QtCore.QEvent.KeyPress):
                return True  # consumed: Space must toggle the gripper, not click a focused button
        elif et == QtCore.QEvent.ApplicationDeactivate or (et == QtCore.QEvent.WindowDeactivate and obj is self):
            self.controller.release_keys()  # the release of a held key will never arrive
        return False

    # ================================================================== close
    def save_settings(self) -> None:
        s = self.settings
        self._save_devices(*self.device_bar.values())
        s.set("window/geometry", self.saveGeometry())
        s.set("window/state", self.saveState())
        s.set("window/tab", self.tabs.currentIndex())
        s.set("collect/task", self.collect_tab.task.currentText())
        s.set("collect/instruction", self.collect_tab.instruction.text())
        s.set("collect/next_seed", self.controller.next_seed)
        s.sync()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802
        if self.controller.recording and not self._closing:
            answer = QtWidgets.QMessageBox.question(
                self, "Recording in progress", "An episode is being recorded. Stop, keep it (outcome "
                "'unknown') and quit?", QtWidgets.QMessageBox.Yes | QtWidgets.QMessageBox.No)
            if answer != QtWidgets.QMessageBox.Yes:
                event.ignore()
                return
        self._closing = True
        self.save_settings()
        QtWidgets.QApplication.instance().removeEventFilter(self)
        self._prebuild_timer.stop()
        self._prebuild_gate.set()  # a connect elsewhere must not wait for this window's pages
        try:
            self.collect_tab.shutdown_3d()  # its cloud thread (the page is built before connecting)
        except Exception as exc:
            log.warning("collect 3D shutdown: %s", exc)
        if getattr(self, "train_tab", None) is not None:
            try:
                self.train_tab.shutdown()   # the trainer saves its checkpoint before the app goes
            except Exception as exc:
                log.warning("train tab shutdown: %s", exc)
        if getattr(self, "evaluate_tab", None) is not None:
            try:
                self.evaluate_tab.shutdown()
            except Exception as exc:
                log.warning("evaluate tab shutdown: %s", exc)
        if self.annotate_tab is not None and hasattr(self.annotate_tab, "shutdown"):
            try:
                self.annotate_tab.shutdown()
            except Exception as exc:
                log.warning("annotate tab shutdown: %s", exc)
        self.controller.shutdown()
        event.accept()


def _key_name(event: QtGui.QKeyEvent) -> str:
    """Qt key event -> the key names robots/keyboard.py understands."""
    q = QtCore.Qt.Key
    special = {q.Key_Space.value: "space", q.Key_Return.value: "enter", q.Key_Enter.value: "enter",
               q.Key_Up.value: "up", q.Key_Down.value: "down", q.Key_Left.value: "left",
               q.Key_Right.value: "right"}
    k = int(event.key())
    if k in special:
        return special[k]
    if event.modifiers() & (QtCore.Qt.ControlModifier | QtCore.Qt.AltModifier | QtCore.Qt.MetaModifier):
        return ""  # Ctrl+R etc. are app shortcuts, not motion
    if q.Key_A.value <= k <= q.Key_Z.value:
        return chr(ord("a") + k - q.Key_A.value)
    return ""
