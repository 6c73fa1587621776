"""Persisted user settings (QSettings): last devices, dataset folder, window geometry, view options.

One place owns the keys and their types so the Collect and Annotate tabs read back exactly what they
wrote. QSettings hands values back as strings on some back-ends (INI files store everything as
text), so ``get`` converts to the type of the default — or of the registered default for known
keys — and falls back to the default when a stored value does not convert (a hand-edited ini must
not crash the app).

Tests pass an ini path so they never touch the user's real settings.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

ORGANIZATION = "ActStudio"
APPLICATION = "ActStudio"

# Known keys and their defaults; anything else is allowed too (typed by the default given to get()).
DEFAULTS: dict[str, Any] = {
    "devices/robot": "sim-franka",
    "devices/camera": "sim",
    "devices/input": "scripted",
    "devices/rate_hz": 20.0,
    "dataset/folder": "",
    "collect/task": "pick_cube",
    "collect/instruction": "",
    "collect/operator": "",
    "collect/next_seed": 0,
    "view/point_size": 2.0,
    "view/show_depth": True,
    "window/geometry": QByteArray(),
    "window/state": QByteArray(),
    "window/tab": 0,
}


def _convert(value: Any, like: Any) -> Any:
    """``value`` as the type of ``like``; raises ValueError/TypeError when it does not fit."""
    if like is None or value is None:
        return value
    if isinstance(like, bool):  # before int: bool is an int subclass
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off", ""):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if isinstance(like, int):
        return int(float(value)) if not isinstance(value, bool) else int(value)
    if isinstance(like, float):
        return float(value)
    if isinstance(like, str):
        return str(value)
    if isinstance(like, Path):
        return Path(str(value))
    if isinstance(like, QByteArray):
        return value if isinstance(value, QByteArray) else QByteArray(bytes(value))
    if isinstance(like, (list, dict)):
        # Stored as JSON text: INI back-ends flatten nested containers unpredictably.
        loaded = json.loads(value) if isinstance(value, str) else value
        if not isinstance(loaded, type(like)):
            raise TypeError(f"expected {type(like).__name__}, got {type(loaded).__name__}")
        return loaded
    return value


class Settings:
    """Typed wrapper around ``QSettings("ActStudio", "ActStudio")`` or an ini file (tests)."""

    def __init__(self, ini_path: str | Path | None = None):
        if ini_path is None:
            self._qs = QSettings(ORGANIZATION, APPLICATION)
        else:
            self._qs = QSettings(str(ini_path), QSettings.Format.IniFormat)

    @property
    def path(self) -> str:
        return self._qs.fileName()

    def get(self, key: str, default: Any = None) -> Any:
        """Stored value as the type of ``default`` (or of the key's registered default)."""
        like = default if default is not None else DEFAULTS.get(key)
        fallback = default if default is not None else DEFAULTS.get(key)
        if not self._qs.contains(key):
            return fallback
        raw = self._qs.value(key)
        try:
            return _convert(raw, like)
        except (ValueError, TypeError, json.JSONDecodeError):
            return fallback

    def set(self, key: str, value: Any) -> None:
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, (list, dict)):
            value = json.dumps(value)
        self._qs.setValue(key, value)

    def contains(self, key: str) -> bool:
        return self._qs.contains(key)

    def remove(self, key: str) -> None:
        self._qs.remove(key)

    def sync(self) -> None:
        """Write to disk now (QSettings otherwise writes lazily, e.g. at exit)."""
        self._qs.sync()

    def keys(self) -> list[str]:
        return list(self._qs.allKeys())
