"""Issue 3 "must show": keyframes and segment proposals against 20 scripted-expert demos in the sim.

The demos run on the simulated xArm6 in lock-step (faster than real time, reproducible), through the
Arm protocol; the per-tick measured state and the expert's phase labels are what a recording holds.
A few pick_cube demos ride along so the proposals are not tuned to one task's phase structure.

The demos are generated once per module on as many lock-step labs as there are cores, up to two (each
lab is its own simulator process; the test process mostly waits on them).
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from recorder.keyframes import detect_keyframes
from recorder.segments import phases_to_primitives, propose_doc, score_proposals
from robots.base import DeviceError
from robots.sim.expert import run_episode
from robots.sim.lab import SimLab

N_DEMOS = 20
N_CROSS = 6  # pick_cube demos: a second task with a different ending (lift, hold, stop)
FPS = 20.0
TOL = 3


def _start_lab(attempts: int = 3) -> SimLab:
    """A lock-step xArm6 lab. On a loaded box the renderer's EGL start can miss its 30 s timeout
    (seen at load 16 on 2 cores); that is the machine, not the proposals under test, so try again."""
    for i in range(attempts):
        try:
            return SimLab.start("xarm6", realtime=False, render_hz=0.5)
        except DeviceError:
            if i == attempts - 1:
                raise


def _record_on_one_lab(jobs, after: threading.Event | None, started: threading.Event):
    out = []
    if after is not None:
        after.wait()  # one lab boots at a time: a loaded box can miss the renderer's start timeout
    try:
        lab = _start_lab()
    finally:
        started.set()
    with lab:
        arm = lab.arm()
        arm.connect()
        for task, seed in jobs:
            rows = []

            def on_tick(t, state, pose, grip, phase):
                rows.append((state.ee_pose.copy(), float(state.gripper), phase))

            ok = run_episode(lab, arm, task, seed, rate_hz=FPS, on_tick=on_tick)
            out.append({"task": task, "seed": seed, "ok": ok, "ee_pose": np.stack([r[0] for r in rows]),
                        "gripper": np.array([r[1] for r in rows]), "phases": [r[2] for r in rows]})
    return out


@pytest.fixture(scope="module")
def all_demos():
    jobs = [("place_in_bin", s) for s in range(N_DEMOS)] + [("pick_cube", s) for s in range(N_CROSS)]
    n_labs = max(1, min(2, len(os.sched_getaffinity(0))))
    started = [threading.Event() for _ in range(n_labs)]
    with ThreadPoolExecutor(n_labs) as pool:
        futures = [pool.submit(_record_on_one_lab, jobs[i::n_labs], started[i - 1] if i else None, started[i])
                   for i in range(n_labs)]
        parts = [f.result() for f in futures]
    demos = sorted((d for part in parts for d in part), key=lambda d: (d["task"], d["seed"]))
    assert [(d["task"], d["seed"]) for d in demos] == sorted(jobs)
    return demos


@pytest.fixture(scope="module")
def demos(all_demos):
    return [d for d in all_demos if d["task"] == "place_in_bin"]


def _transitions(signal: np.ndarray, threshold: float = 0.5) -> list[tuple[int, str]]:
    """Frames where the measured gripper crosses the half-way level (ground truth for keyframes)."""
    g = (signal - signal.min()) / max(np.ptp(signal), 1e-9)
    above = g > threshold
    return [(i, "gripper_open" if above[i] else "gripper_close")
            for i in range(1, len(g)) if above[i] != above[i - 1]]


def _scores(demos):
    scores = [score_proposals(propose_doc(d["ee_pose"], d["gripper"], FPS), d["phases"], d["gripper"], tol=TOL)
              for d in demos]
    f1 = float(np.mean([s.f1 for s in scores]))
    agreement = float(np.mean([s.agreement for s in scores]))
    print(f"\n{len(demos)} sim demos ({demos[0]['task']}): boundary F1@±{TOL} = {f1:.3f} "
          f"(min {min(s.f1 for s in scores):.3f}), label agreement = {agreement:.3f} "
          f"(min {min(s.agreement for s in scores):.3f})")
    return scores, f1, agreement


def test_expert_demos_succeed(all_demos):
    assert len(all_demos) == N_DEMOS + N_CROSS
    assert sum(d["ok"] for d in all_demos if d["task"] == "place_in_bin") >= 18
    assert sum(d["ok"] for d in all_demos if d["task"] == "pick_cube") >= N_CROSS - 1


def test_gripper_keyframes_exact_to_one_frame(all_demos):
    for d in all_demos:
        truth = _transitions(d["gripper"])
        found = [(k.frame, k.kind) for k in detect_keyframes(d["ee_pose"], d["gripper"])
                 if k.kind != "static"]
        assert len(found) == len(truth), (d["task"], d["seed"], found, truth)
        for (f, kind), (t, tkind) in zip(found, truth):
            assert kind == tkind and abs(f - t) <= 1, (d["task"], d["seed"], found, truth)


def test_segment_boundaries_and_labels_match_the_expert_phases(demos):
    scores, f1, agreement = _scores(demos)
    assert f1 >= 0.9
    assert agreement >= 0.9
    # no demo is carried by the others
    assert min(s.f1 for s in scores) >= 0.75 and min(s.agreement for s in scores) >= 0.85
    # The labelled sequence follows the task: grasp before lift before transport before place.
    prims = phases_to_primitives(demos[0]["phases"], demos[0]["gripper"])
    order = [p for i, p in enumerate(prims) if i == 0 or p != prims[i - 1]]
    for a, b in [("grasp", "lift"), ("lift", "transport"), ("transport", "place")]:
        assert order.index(a) < order.index(b), order


def test_proposed_sequence_reads_like_the_task(demos):
    for d in demos:
        seq = [s.primitive for s in propose_doc(d["ee_pose"], d["gripper"], FPS).segments]
        assert seq == ["move", "grasp", "lift", "transport", "lower", "place", "move", "wait"], (d["seed"], seq)


def test_a_second_task_meets_the_same_targets(all_demos):
    cross = [d for d in all_demos if d["task"] == "pick_cube"]
    scores, f1, agreement = _scores(cross)
    assert f1 >= 0.9 and agreement >= 0.9
    # A pick_cube episode ends with the gripper closed; the next reset restores it open, so no episode
    # starts with an opening (which, holding nothing, must never read as a "place" anyway).
    assert not any(_transitions(d["gripper"]) and _transitions(d["gripper"])[0][1] == "gripper_open"
                   for d in cross)
    for d in cross:
        seq = [s.primitive for s in propose_doc(d["ee_pose"], d["gripper"], FPS).segments]
        assert seq == ["move", "grasp", "lift", "wait"], (d["seed"], seq)
