"""`python main.py migrate FILE_OR_DIR…`: convert episodes to the current schema (v1 -> v2).

v2 stores RGB as H.264 (recorder/video.py), ~1/50 of v1's losslessly compressed frames; depth
and every other field are copied unchanged. The re-encoding is lossy (~40 dB PSNR on camera
frames), which is why opening a v1 file never converts it: v1 files keep working as they are, and
this command converts them when asked. Each file is rebuilt beside itself and swapped in with one
``os.replace`` once it validates, so a kill or a full disk leaves the old file whole.
Exit code 0 when every episode is current afterwards, 1 if any failed (each failure is one line).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("migrate", help="convert episodes to the current schema (v1 -> v2: RGB as H.264)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="episode .h5 files or folders of episodes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs, tests)")
    p.set_defaults(func=run)


def _episodes(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        out += sorted(p.glob("*.h5")) if p.is_dir() else [p]
    return out


def run(args: argparse.Namespace) -> int:
    import h5py
    from tqdm import tqdm

    from recorder.episode import marker_path
    from recorder.schema import SCHEMA_VERSION, EpisodeError, migrate_file, schema_version_of

    failed = 0
    for path in _episodes(args.paths):
        try:
            if not path.exists():
                raise EpisodeError(path, "file", "not found")
            if marker_path(path).exists():
                raise EpisodeError(path, "file", "still being recorded, or a crashed take (run `main.py info` on "
                                                 "its folder to recover it first)")
            try:
                with h5py.File(path, "r") as f:
                    version = schema_version_of(f, path)
                    frames = int(f["time"].shape[0]) if "time" in f else 0
            except OSError:
                raise EpisodeError(path, "file", "not an HDF5 file") from None
            if version >= SCHEMA_VERSION:
                print(f"{path.name}: already v{version}", flush=True)
                continue
            with tqdm(total=frames, desc=path.name, unit="frame", disable=args.no_progress, leave=False) as bar:
                migrate_file(path, progress=bar.update)
            print(f"{path.name}: v{version} -> v{SCHEMA_VERSION} ({frames} frames)", flush=True)
        except EpisodeError as exc:
            failed += 1
            print(str(exc), flush=True)
    return 1 if failed else 0
