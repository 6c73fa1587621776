"""Success tracking for rollouts: trial records, Wilson 95 % intervals, cumulative curves and the
run report (JSON + CSV + PNG) written into the run folder.

Pure (numpy, scipy, matplotlib's Agg backend): no Qt, no devices, so the CLI, the Evaluate tab and the
ablation bench compute the same numbers.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy.stats import binomtest

OUTCOMES = ("success", "failure")
# Why a trial ended; the operator's S/F key on hardware adds its own free-text reason.
REASONS = ("success", "timeout", "safety_stop", "nan", "out_of_workspace", "dropped_object",
           "device_error", "cancelled", "operator", "plan_finished", "policy_error")


@dataclass
class TrialRecord:
    index: int
    task: str
    seed: int
    outcome: str  # success | failure
    reason: str  # see REASONS; "success" for a success
    duration_s: float
    episode: str = ""  # path of the episode file the trial was saved as
    latency_p50_ms: float = float("nan")  # policy inference latency per chunk
    latency_p99_ms: float = float("nan")
    chunks: int = 0
    safety_events: int = 0
    # Per-subtask tracking (app.subtasks): the task's atomic actions reached / completed (space-separated,
    # in task order), the one a failed trial failed at, why, and the episode frame it was diagnosed at.
    reached: str = ""
    completed: str = ""
    failed_at: str = ""
    diagnosis: str = ""
    failed_frame: int = -1
    segments: str = ""  # the trial's proposal segments as episode frames, "move:0-52 grasp:52-80 …"

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"trial outcome must be one of {OUTCOMES}, got {self.outcome!r}")

    @property
    def success(self) -> bool:
        return self.outcome == "success"


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (scipy's ``binomtest(...).proportion_ci``).
    Unlike the normal approximation it stays in [0, 1] and is not degenerate at 0/n or n/n, which
    is where small rollout counts usually sit. (scipy costs ~0.7 ms a call, a hand-written formula
    0.1 ms; a report computes a few dozen: the library wins.)"""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def cumulative_curve(outcomes: Sequence[bool]) -> np.ndarray:
    """Success rate after each trial: element i is successes in trials 0..i divided by i+1."""
    o = np.asarray(outcomes, dtype=float)
    if o.size == 0:
        return np.zeros(0)
    return np.cumsum(o) / np.arange(1, o.size + 1)


@dataclass
class TaskSummary:
    task: str
    trials: int
    successes: int
    rate: float
    ci_low: float
    ci_high: float
    reasons: dict[str, int] = field(default_factory=dict)


def summarize(trials: Iterable[TrialRecord]) -> dict[str, TaskSummary]:
    """Per-task success rate, Wilson interval and failure-reason counts, tasks in first-seen order."""
    by_task: dict[str, list[TrialRecord]] = {}
    for t in trials:
        by_task.setdefault(t.task, []).append(t)
    out = {}
    for task, ts in by_task.items():
        k = sum(t.success for t in ts)
        lo, hi = wilson_interval(k, len(ts))
        reasons: dict[str, int] = {}
        for t in ts:
            reasons[t.reason] = reasons.get(t.reason, 0) + 1
        out[task] = TaskSummary(task, len(ts), k, k / len(ts), lo, hi, reasons)
    return out


@dataclass
class SubtaskSummary:
    task: str
    subtask: str
    reached: int  # trials that got to it (the subtask before it was completed)
    completed: int
    rate: float  # completed / reached (nan when none reached it)
    ci_low: float  # Wilson 95 % interval of that rate
    ci_high: float
    failed_here: int  # failed trials whose first incomplete subtask this is


def subtask_summary(trials: Iterable[TrialRecord]) -> list[SubtaskSummary]:
    """Reached/completed counts per task and atomic action with the Wilson interval of completed/reached.
    Trials without subtask tracking (older reports) are left out."""
    from app.subtasks import subtasks_for

    by_task: dict[str, list[TrialRecord]] = {}
    for t in trials:
        if t.reached:
            by_task.setdefault(t.task, []).append(t)
    out = []
    for task, ts in by_task.items():
        seen = [n for n in subtasks_for(task)]
        for t in ts:  # a hardware task of another name may name other steps
            seen += [n for n in t.reached.split() if n not in seen]
        for name in seen:
            r = sum(name in t.reached.split() for t in ts)
            c = sum(name in t.completed.split() for t in ts)
            if r == 0 and name not in subtasks_for(task):
                continue
            lo, hi = wilson_interval(c, r)
            out.append(SubtaskSummary(task, name, r, c, c / r if r else float("nan"), lo, hi,
                                      sum(t.failed_at == name for t in ts)))
    return out


def latency_stats(latencies_s: Sequence[float]) -> dict[str, float]:
    a = np.asarray([x for x in latencies_s if math.isfinite(x)], dtype=float) * 1e3
    if a.size == 0:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}


CSV_FIELDS = [f for f in TrialRecord.__dataclass_fields__]


def write_report(out_dir: str | Path, trials: Sequence[TrialRecord], meta: dict,
                 latencies_s: Sequence[float] = ()) -> dict[str, Path]:
    """Write report.json (meta, per-task summary, trials, latency), trials.csv and report.png into
    ``out_dir``; returns the three paths. Files are written under temporary names and renamed, so a
    crash never leaves a half report that a reader would trust."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(trials)
    subtasks = subtask_summary(trials)
    doc = {"meta": meta, "summary": {k: asdict(v) for k, v in summary.items()},
           "subtasks": [asdict(s) for s in subtasks],
           "latency": latency_stats(latencies_s), "trials": [asdict(t) for t in trials]}
    paths = {"json": out / "report.json", "csv": out / "trials.csv", "png": out / "report.png",
             "subtasks_csv": out / "subtasks.csv"}
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    tmp.replace(paths["json"])
    tmp = paths["csv"].with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for t in trials:
            w.writerow(asdict(t))
    tmp.replace(paths["csv"])
    tmp = paths["subtasks_csv"].with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(SubtaskSummary.__dataclass_fields__))
        w.writeheader()
        for st in subtasks:
            w.writerow(asdict(st))
    tmp.replace(paths["subtasks_csv"])
    plot_report(paths["png"], trials, summary, title=str(meta.get("title", "")), subtasks=subtasks)
    return paths


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def plot_subtasks(ax, subtasks: Sequence[SubtaskSummary]) -> None:
    """Bars of completed/reached per atomic action (task order) with Wilson 95 % error bars, the
    counts written on them; several tasks get "task: subtask" labels."""
    tasks = list(dict.fromkeys(s.task for s in subtasks))
    labels = [s.subtask if len(tasks) == 1 else f"{s.task}: {s.subtask}" for s in subtasks]
    y = np.arange(len(subtasks))[::-1]
    rate = np.array([0.0 if s.reached == 0 else s.rate for s in subtasks]) * 100
    lo = np.array([s.ci_low for s in subtasks]) * 100
    hi = np.array([s.ci_high for s in subtasks]) * 100
    colours = ["tab:green" if s.reached and s.completed == s.reached else
               "tab:red" if s.failed_here else "tab:blue" for s in subtasks]
    ax.barh(y, rate, color=colours, alpha=0.8)
    ax.errorbar(rate, y, xerr=[np.clip(rate - lo, 0, None), np.clip(hi - rate, 0, None)], fmt="none",
                ecolor="black", capsize=3, lw=1)
    for yi, s in zip(y, subtasks):
        ax.text(2, yi, f"{s.completed}/{s.reached}", va="center", fontsize=8, color="white" if s.completed else "black")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel("completed / reached (%)")
    ax.set_title("success by subtask (Wilson 95 %)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)


def plot_report(path: str | Path, trials: Sequence[TrialRecord], summary: dict[str, TaskSummary] | None = None,
                title: str = "", subtasks: Sequence[SubtaskSummary] | None = None) -> Path:
    """Cumulative success per task with its final Wilson interval, failure reasons and, for trials with
    subtask tracking, success by subtask (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    summary = summary if summary is not None else summarize(trials)
    subtasks = list(subtasks) if subtasks is not None else subtask_summary(trials)
    fig = Figure(figsize=(13 if subtasks else 9, 4), dpi=100)
    if subtasks:
        ax, bx, cx = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2, 1, 1.3]})
        plot_subtasks(cx, subtasks)
    else:
        ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    for task, s in summary.items():
        ts = [t for t in trials if t.task == task]
        curve = cumulative_curve([t.success for t in ts])
        x = np.arange(1, len(curve) + 1)
        line, = ax.plot(x, curve * 100, marker="o", ms=3, label=f"{task}: {s.successes}/{s.trials} "
                                                                   f"[{s.ci_low * 100:.0f}–{s.ci_high * 100:.0f} %]")
        ax.fill_between([x[-1] - 0.3, x[-1] + 0.3], s.ci_low * 100, s.ci_high * 100, color=line.get_color(), alpha=0.25)
    ax.set_xlabel("trial")
    ax.set_ylabel("cumulative success (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    if summary:
        ax.legend(loc="lower right", fontsize=8)
    reasons: dict[str, int] = {}
    for s in summary.values():
        for r, n in s.reasons.items():
            reasons[r] = reasons.get(r, 0) + n
    names = sorted(reasons, key=lambda r: -reasons[r])
    bx.barh(names, [reasons[r] for r in names], color=["tab:green" if r == "success" else "tab:red" for r in names])
    bx.set_xlabel("trials")
    bx.set_title("how trials ended", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def read_report(path: str | Path) -> dict:
    """Load a report.json (or the folder holding one) with a one-line error for a bad file."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: no rollout report") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not a rollout report (invalid JSON at line {exc.lineno})") from None
    if not isinstance(doc, dict) or "trials" not in doc or "summary" not in doc:
        raise ValueError(f"{p}: not a rollout report (fields 'trials'/'summary' missing)")
    return doc
