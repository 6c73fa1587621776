"""Clear the HDF5 superblock's "open for write" flags of a file whose writer was killed.

HDF5 1.10+ files with a version 2/3 superblock (``libver="latest"``) carry file-consistency flags:
a writer sets them when it opens the file and clears them on close, and the library refuses to
open a file that has them set ("file is already open for write (may use <h5clear file> ...)"). A
writer killed while it had such a file open (older ActStudio versions did this during finalize)
leaves a file full of frames that nothing will open. This is what ``h5clear -s`` does, written
here because h5clear comes from the HDF5 C tools (Debian's hdf5-tools, built against an older
HDF5 than h5py's) and the change is one byte plus the superblock checksum.

Layout (HDF5 file format spec, "Version 2 and 3 superblock"): signature (8 bytes), version (1),
size of offsets O (1), size of lengths (1), file consistency flags (1), then four addresses of O
bytes each and a Jenkins lookup3 checksum (4 bytes, little endian) of everything before it. The
superblock sits at offset 0 or at a power of two ≥ 512 when the file has a user block.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MASK = 0xFFFFFFFF

__all__ = ["lookup3", "superblock_flags", "clear_write_flags"]


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum HDF5 puts on its metadata."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _MASK
    k = 0
    while length > 12:
        a = (a + int.from_bytes(data[k:k + 4], "little")) & _MASK
        b = (b + int.from_bytes(data[k + 4:k + 8], "little")) & _MASK
        c = (c + int.from_bytes(data[k + 8:k + 12], "little")) & _MASK
        # mix(a, b, c)
        a = (a - c) & _MASK; a ^= _rot(c, 4); c = (c + b) & _MASK  # noqa: E702
        b = (b - a) & _MASK; b ^= _rot(a, 6); a = (a + c) & _MASK  # noqa: E702
        c = (c - b) & _MASK; c ^= _rot(b, 8); b = (b + a) & _MASK  # noqa: E702
        a = (a - c) & _MASK; a ^= _rot(c, 16); c = (c + b) & _MASK  # noqa: E702
        b = (b - a) & _MASK; b ^= _rot(a, 19); a = (a + c) & _MASK  # noqa: E702
        c = (c - b) & _MASK; c ^= _rot(b, 4); b = (b + a) & _MASK  # noqa: E702
        length -= 12
        k += 12
    if length == 0:
        return c
    tail = data[k:k + length] + bytes(12 - length)  # the byte-wise switch of the C code, zero padded
    a = (a + int.from_bytes(tail[0:4], "little")) & _MASK
    b = (b + int.from_bytes(tail[4:8], "little")) & _MASK
    c = (c + int.from_bytes(tail[8:12], "little")) & _MASK
    # final(a, b, c)
    c ^= b; c = (c - _rot(b, 14)) & _MASK  # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & _MASK  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & _MASK  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & _MASK  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & _MASK  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & _MASK  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & _MASK  # noqa: E702
    return c


def _find_superblock(fd: int) -> int | None:
    size = os.fstat(fd).st_size
    offset = 0
    while offset + len(SIGNATURE) <= size:
        if os.pread(fd, len(SIGNATURE), offset) == SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def _read_superblock(fd: int) -> tuple[int, bytes, int] | None:
    """(offset, bytes before the checksum, stored checksum) of a version 2/3 superblock, else None."""
    base = _find_superblock(fd)
    if base is None:
        return None
    head = os.pread(fd, 12, base)
    if len(head) < 12 or head[8] not in (2, 3):
        return None
    n = 12 + 4 * head[9]
    raw = os.pread(fd, n + 4, base)
    if len(raw) < n + 4:
        return None
    return base, raw[:n], int.from_bytes(raw[n:], "little")


def superblock_flags(path: str | os.PathLike) -> int | None:
    """The consistency flags byte (0 = closed cleanly), or None for files without such a superblock
    or whose superblock checksum does not match (damaged: leave it alone)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        sb = _read_superblock(fd)
    finally:
        os.close(fd)
    if sb is None or lookup3(sb[1]) != sb[2]:
        return None
    return sb[1][11]


def clear_write_flags(path: str | os.PathLike) -> bool:
    """Clear the flags of a file left "open for write" by a dead writer; True if anything changed.

    Refuses (False) while another process holds the file open through HDF5, which flock()s it.
    One pwrite of flag byte + checksum, so a crash during it cannot make the file worse than it was."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live writer has it
        sb = _read_superblock(fd)
        if sb is None:
            return False
        base, body, stored = sb
        if lookup3(body) != stored or body[11] == 0:
            return False
        cleared = body[:11] + b"\x00" + body[12:]
        checksum = lookup3(cleared).to_bytes(4, "little")
        os.pwrite(fd, b"\x00" + cleared[12:] + checksum, base + 11)
        os.fsync(fd)
        return True
    finally:
        os.close(fd)
