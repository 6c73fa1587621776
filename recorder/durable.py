"""Crash-atomic file and folder replacement, shared by the episode writer, annotations and exports.

The pattern everywhere: build the new thing under a temporary name beside the target, fsync it,
then swap it in with one rename, so a kill at any instant leaves either the old or the new
complete version under the target's name (plus, at worst, a temporary that is cleaned up later).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["fsync_path", "atomic_file", "atomic_dir", "remove_dead_temporaries", "copy_file"]


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory (a rename is durable once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy with ``copy_file_range``: on XFS (reflink=1, RHEL's default) and btrfs it shares the
    extents, so finalizing a multi-GB take costs no copy at all; elsewhere it copies in the kernel
    (ext4: ~1 GB/s here, bench/finalize.py). Falls back to shutil for other file systems."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        size = os.fstat(fi.fileno()).st_size
        done = 0
        try:
            while done < size:
                n = os.copy_file_range(fi.fileno(), fo.fileno(), size - done)
                if n == 0:
                    break
                done += n
        except OSError:
            done = -1
        if done != size:  # unsupported (EXDEV/ENOSYS/EINVAL on some file systems): plain copy
            fi.seek(0)
            fo.seek(0)
            fo.truncate()
            shutil.copyfileobj(fi, fo, 16 << 20)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temporaries(out: str | os.PathLike, suffix: str) -> list[Path]:
    """Remove ``<out>.<pid><suffix>`` left by writers that were killed (their pid is gone)."""
    out = Path(out)
    removed = []
    for tmp in out.parent.glob(f"{out.name}.*{suffix}"):
        pid = tmp.name[len(out.name) + 1: -len(suffix)]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_file(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``out``; on a clean exit it replaces ``out`` atomically,
    on an exception it is removed and ``out`` is untouched. Temporaries of killed earlier
    writes to ``out`` are removed first."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(out, ".tmp")
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, out)
        fsync_path(out.parent)
    finally:
        tmp.unlink(missing_ok=True)


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD = -100
    rc = renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``out``; on a clean exit it takes ``out``'s place.

    An existing ``out`` is exchanged atomically with the new folder (renameat2) and then deleted,
    so ``out`` is at every instant either the old or the new complete export. Where the exchange is
    not supported, the old folder is first renamed to ``<out>.<pid>.old`` (then the old export is
    complete under that name for the instant between the two renames).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(out, ".partial")
    remove_dead_temporaries(out, ".old")
    tmp = out.with_name(f"{out.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for p in tmp.rglob("*"):
            if p.is_file():
                fsync_path(p)
        fsync_path(tmp)
        if not out.exists():
            os.rename(tmp, out)
        elif _exchange(tmp, out):
            pass  # tmp now holds the old export
        else:
            old = out.with_name(f"{out.name}.{os.getpid()}.old")
            os.rename(out, old)
            os.rename(tmp, out)
            tmp = old
        fsync_path(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
