"""Episodes of a dataset folder with their annotation status; bad files listed with their message.

A folder is either ActStudio HDF5 episodes or a LeRobotDataset v3 folder (meta/info.json), whose
episodes are listed as ``episode_NNNNNN`` rows (app.lerobot_browse).

The folder is scanned on a worker thread (``recorder.dataset.Dataset`` opens every changed file,
and the annotation status is read from each episode's store), so a large dataset never freezes
the window. A bad file shows its one-line error in red and cannot be opened; the rest still can.
"""
from __future__ import annotations

import threading
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from widgets import style

COLUMNS = ("Episode", "Frames", "Status", "Annotators")   # task, outcome … in the tooltip
STATUS_COLORS = {"new": style.TEXT_DIM, "proposed": style.WARNING, "verified": "#6fd08c"}
PATH_ROLE = QtCore.Qt.UserRole + 1
ERROR_ROLE = QtCore.Qt.UserRole + 2


def scan_folder(folder: Path) -> tuple[list, str]:
    """(episode infos with the store's status, folder error) — run off the UI thread."""
    from app.annotate_episode import annotation_status
    from recorder.annotations import load_annotations
    from recorder.dataset import Dataset
    from recorder.lerobot_dataset import is_lerobot_dataset
    from recorder.messages import one_line

    if is_lerobot_dataset(folder):
        from app.lerobot_browse import scan_lerobot
        return scan_lerobot(folder)
    try:
        ds = Dataset(folder)
    except Exception as exc:
        return [], f"{folder}: {one_line(exc)}"
    infos = list(ds.episodes)
    for info in infos:
        if not info.ok:
            continue
        try:
            info.annotation, info.annotators = annotation_status(load_annotations(info.path))
        except Exception as exc:
            info.ok, info.error = False, f"{info.path.name}: /annotations: {one_line(exc)}"
    return infos, ""


class DatasetBrowser(QtWidgets.QWidget):
    episodeActivated = QtCore.Signal(object)   # Path of a good episode the user picked
    scanned = QtCore.Signal(int, int)          # good, bad episode counts after a scan
    _scan_done = QtCore.Signal(object, int, object, str)

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.folder: Path | None = None
        self._token = 0
        self._infos: dict[Path, object] = {}

        self.header = QtWidgets.QLabel("No dataset")
        self.header.setStyleSheet(f"color: {style.TEXT}; font-weight: bold; padding: 4px;")
        self.header.setWordWrap(True)
        self.tree = QtWidgets.QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setSelectionMode(QtWidgets.QAbstractItemView.SingleSelection)
        self.tree.setTextElideMode(QtCore.Qt.ElideMiddle)   # long timestamped names keep both ends
        self.tree.header().setStretchLastSection(True)
        self.tree.setStyleSheet(
            f"QTreeWidget {{ background: {style.PANEL}; alternate-background-color: #2a2f37; color: {style.TEXT};"
            f" border: none; }} QHeaderView::section {{ background: #313640; color: {style.TEXT_DIM};"
            f" border: none; padding: 3px; }} QTreeWidget::item:selected {{ background: #3a5f8f; }}")
        self.tree.itemActivated.connect(self._on_activated)
        self.tree.currentItemChanged.connect(lambda cur, _prev: self._on_activated(cur) if cur else None)
        self.error_label = QtWidgets.QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(f"color: {style.ERROR}; padding: 4px;")
        self.error_label.hide()

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.header)
        lay.addWidget(self.tree, 1)
        lay.addWidget(self.error_label)
        self._scan_done.connect(self._on_scan_done)

    # -- loading ---------------------------------------------------------------------------------

    def set_folder(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.header.setText(f"{self.folder.name or self.folder} — scanning…")
        self.tree.clear()
        self._scan()

    def rescan(self) -> None:
        """Scan the same folder again (new episodes recorded into it); the list stays as it is
        until the scan is done, then keeps its scroll position."""
        if self.folder is not None:
            self._scan()

    def _scan(self) -> None:
        self._token += 1
        token, folder = self._token, self.folder

        def job():
            infos, error = scan_folder(folder)
            self._scan_done.emit(folder, token, infos, error)

        threading.Thread(target=job, name="dataset-scan", daemon=True).start()

    def _on_scan_done(self, folder: Path, token: int, infos: list, error: str) -> None:
        if token != self._token:
            return
        scroll = self.tree.verticalScrollBar().value()
        self.tree.clear()
        self._infos = {i.path: i for i in infos}
        if error:
            self.header.setText(error)
            self.scanned.emit(0, 0)
            return
        bad = [i for i in infos if not i.ok]
        for info in infos:
            self.tree.addTopLevelItem(self._item(info))
        for c in range(len(COLUMNS) - 1):
            self.tree.resizeColumnToContents(c)
        self.tree.setColumnWidth(0, min(self.tree.columnWidth(0), 180))
        good = len(infos) - len(bad)
        from recorder.lerobot_dataset import is_lerobot_dataset
        kind = " (LeRobot v3)" if is_lerobot_dataset(folder) else ""
        self.header.setText(f"{folder.name}{kind}: {good} episode{'s' * (good != 1)}"
                            + (f", {len(bad)} unreadable" if bad else ""))
        self.error_label.setVisible(bool(bad))
        self.error_label.setText("\n".join(i.error for i in bad))
        self.tree.verticalScrollBar().setValue(scroll)
        self.scanned.emit(good, len(bad))

    def _item(self, info) -> QtWidgets.QTreeWidgetItem:
        item = QtWidgets.QTreeWidgetItem()
        item.setData(0, PATH_ROLE, info.path)
        item.setText(0, info.name)
        if not info.ok:
            item.setText(2, "unreadable")
            item.setData(0, ERROR_ROLE, info.error)
            for c in range(len(COLUMNS)):
                item.setForeground(c, QtGui.QColor(style.ERROR))
                item.setToolTip(c, info.error)
            item.setIcon(0, self.style().standardIcon(QtWidgets.QStyle.SP_MessageBoxWarning))
            return item
        item.setText(1, f"{info.n_frames}  ({info.duration:.0f} s)")
        for c in range(len(COLUMNS)):
            item.setToolTip(c, info.line())
        self._set_status(item, info.annotation, info.annotators)
        return item

    def _set_status(self, item, status: str, annotators: list[str]) -> None:
        item.setText(2, status)
        item.setForeground(2, QtGui.QColor(STATUS_COLORS.get(status, style.TEXT)))
        item.setText(3, ", ".join(annotators))

    # -- queries / updates -----------------------------------------------------------------------

    def rows(self) -> list[dict]:
        """What each row shows (tests and the main window's summaries)."""
        out = []
        for k in range(self.tree.topLevelItemCount()):
            it = self.tree.topLevelItem(k)
            out.append({"path": it.data(0, PATH_ROLE), "name": it.text(0), "error": it.data(0, ERROR_ROLE) or "",
                        "status": it.text(2), "annotators": it.text(3)})
        return out

    def good_paths(self) -> list[Path]:
        return [r["path"] for r in self.rows() if not r["error"]]

    def update_status(self, path: Path, status: str, annotators: list[str]) -> None:
        for k in range(self.tree.topLevelItemCount()):
            it = self.tree.topLevelItem(k)
            if it.data(0, PATH_ROLE) == Path(path):
                self._set_status(it, status, annotators)

    def select(self, path: Path) -> None:
        for k in range(self.tree.topLevelItemCount()):
            it = self.tree.topLevelItem(k)
            if it.data(0, PATH_ROLE) == Path(path):
                self.tree.setCurrentItem(it)
                return

    def _on_activated(self, item: QtWidgets.QTreeWidgetItem) -> None:
        error = item.data(0, ERROR_ROLE)
        if error:
            self.error_label.setText(error)
            self.error_label.show()
            return
        self.episodeActivated.emit(item.data(0, PATH_ROLE))
