"""Per-lab robot settings persisted with the app's settings (robots/lab_config.py says what they mean).

Keys ``lab/<family>/tcp_offset`` ([x, y, z], m) and ``lab/<family>/workspace`` ([x0, y0, z0, x1, y1, z1],
m), one pair per robot family, so a bench with a Franka and an xArm keeps both. The GUI edits them in
Devices → Lab settings…; the CLI reads them and takes ``--tcp-offset`` / ``--workspace`` as overrides
for one run (``main.py robot settings --save`` stores them).
"""
from __future__ import annotations

from robots.lab_config import LabConfig, family


def _keys(fam: str) -> tuple[str, str]:
    return f"lab/{fam}/tcp_offset", f"lab/{fam}/workspace"


def load_lab_config(robot: str, settings=None, *, tcp_offset=None, workspace=None) -> LabConfig:
    """Stored values for ``robot``'s family (defaults where none), overridden by the given ones.

    A stored value that no longer passes the checks (hand-edited ini) falls back to the default; a
    bad override raises ValueError with one line (the operator typed it just now)."""
    fam = family(robot)
    stored_tcp = stored_ws = None
    if settings is not None:
        k_tcp, k_ws = _keys(fam)
        stored_tcp = settings.get(k_tcp, []) or None
        stored_ws = settings.get(k_ws, []) or None
    try:
        base = LabConfig.from_values(fam, stored_tcp, stored_ws)
    except ValueError:
        base = LabConfig.default(fam)
    return LabConfig.from_values(fam, base.tcp_offset if tcp_offset is None else tcp_offset,
                                 [*base.workspace.lo, *base.workspace.hi] if workspace is None else workspace)


def save_lab_config(cfg: LabConfig, settings) -> None:
    k_tcp, k_ws = _keys(cfg.robot)
    settings.set(k_tcp, [float(v) for v in cfg.tcp_offset])
    settings.set(k_ws, [float(v) for v in (*cfg.workspace.lo, *cfg.workspace.hi)])
    settings.sync()


def default_settings():
    """The user's app settings (QSettings), or None where Qt is not importable (hardware-only CLI)."""
    try:
        from app.settings import Settings
    except ImportError:
        return None
    return Settings()
