"""The dataset browser's rows for a LeRobotDataset v3 folder: one per episode, with the same
annotation status column as HDF5 episodes (from meta/actstudio_annotations.json, else the
dataset's own subtask rows). No Qt here; runs on the browser's scan thread."""
from __future__ import annotations

from pathlib import Path

from recorder.dataset import EpisodeInfo


def scan_lerobot(folder: str | Path) -> tuple[list[EpisodeInfo], str]:
    """(one EpisodeInfo per episode, folder error) for a LeRobot v3 dataset folder."""
    from app.annotate_episode import annotation_status
    from recorder.messages import one_line
    from recorder import lerobot_annotations as la
    from recorder.lerobot_dataset import episode_path, read_episodes, read_info

    folder = Path(folder)
    try:
        info = read_info(folder)
        episodes = read_episodes(folder)
        la.recover(folder)
        side = la.read_sidecar(folder)
    except Exception as exc:
        return [], f"{folder}: {one_line(exc)}"
    fps = float(info["fps"])
    out = []
    for ep in episodes:
        i = int(ep["episode_index"])
        n = int(ep.get("length") or 0)
        tasks = ep.get("tasks") or []
        row = EpisodeInfo(path=episode_path(folder, i), ok=True, n_frames=n, duration=n / fps, fps=fps,
                          task=str(tasks[0]) if tasks else "", robot=str(info.get("robot_type") or ""),
                          outcome="lerobot", instruction=str(tasks[0]) if tasks else "")
        entry = side["episodes"].get(str(i))
        if entry:
            try:
                from recorder.annotations import AnnotationDoc
                docs = {k: AnnotationDoc.from_dict(k, d) for k, d in entry["docs"].items()}
                row.annotation, row.annotators = annotation_status(docs)
            except Exception as exc:
                row.ok, row.error = False, f"{row.name}: {la.SIDECAR}: {one_line(exc)}"
        out.append(row)
    return out, ""
