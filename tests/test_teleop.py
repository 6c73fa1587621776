"""Control loop: fixed-rate scheduling, watchdog, e-stop — timing with a kinematic arm double, then the
device-lost stop measured on the simulated lab."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from app.teleop import ControlLoop, Tick
from robots.base import ArmState, DeviceDisconnected, TeleopState
from robots.safety import default_limits

HOME = np.array([0.4, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0])


# ------------------------------------------------------------------ edges that cannot run here
class StreamDevice:
    """A TeleopDevice whose stream the test controls: a constant twist, fresh stamps on every read
    until ``freeze()`` (the stream stops: stamps no longer advance) or ``unplug()`` (connected False)."""

    name = "stream"

    def __init__(self, twist=(1.0, 0, 0, 0, 0, 0), buttons=None):
        self.twist = np.array(twist, dtype=float)
        self.buttons = dict(buttons or {})
        self._frozen_at: float | None = None
        self._connected = True
        self.lost_at: float | None = None

    def open(self):
        pass

    def close(self):
        pass

    @property
    def connected(self) -> bool:
        return self._connected

    def read(self) -> TeleopState:
        stamp = self._frozen_at if self._frozen_at is not None else time.monotonic()
        return TeleopState(stamp=stamp, twist=self.twist.copy(), buttons=dict(self.buttons),
                           connected=self._connected)

    def freeze(self):
        self._frozen_at = self.lost_at = time.monotonic()

    def unplug(self):
        self.lost_at = time.monotonic()
        self._connected = False


class KinematicGripper:
    def __init__(self):
        self.commands: list[float] = []

    def width(self):
        return self.commands[-1] if self.commands else 1.0

    def open(self):
        self.command(1.0)

    def close(self):
        self.command(0.0)

    def command(self, opening):
        self.commands.append(opening)


class KinematicArm:
    """Test double for pure timing tests: the pose is the last servo target; calls are recorded."""

    name = "franka"
    dof = 7

    def __init__(self, servo_delay: float = 0.0):
        self.limits = default_limits("franka")
        self.gripper = KinematicGripper()
        self.pose = HOME.copy()
        self.servos: list[tuple[float, np.ndarray]] = []
        self.stops: list[float] = []
        self.servo_delay = servo_delay
        self.block = threading.Event()
        self.block.set()
        self.fail_state = False
        self.hung_at: float | None = None
        self.frozen = False

    def connect(self): ...
    def disconnect(self): ...
    def move_to(self, target, timeout=10.0): ...
    def recover(self): ...
    def home(self): ...

    def state(self):
        if self.fail_state:
            raise DeviceDisconnected("arm stopped answering")
        return ArmState(stamp=time.monotonic(), ee_pose=self.pose.copy(), joint_pos=np.zeros(7),
                        gripper=self.gripper.width())

    def servo(self, target):
        if not self.block.is_set():
            self.hung_at = time.monotonic()
        self.block.wait()
        if self.servo_delay:
            time.sleep(self.servo_delay)
        self.servos.append((time.monotonic(), np.array(target)))
        if not self.frozen:
            self.pose = np.array(target)

    def stop(self):
        self.stops.append(time.monotonic())


class Expert:
    """TargetSource that walks along +y at 0.1 m/s and closes the gripper after 0.2 s."""

    def __init__(self):
        self.calls = 0

    def next_target(self, state, frame, t):
        self.calls += 1
        pose = HOME.copy()
        pose[1] += 0.1 * t
        return pose, (0.0 if t > 0.2 else 1.0), {"expert_phase": "move"}


def run_for(loop: ControlLoop, seconds: float) -> list[Tick]:
    ticks: list[Tick] = []
    loop.add_listener(ticks.append)
    loop.start()
    time.sleep(seconds)
    loop.stop()
    return ticks


# ------------------------------------------------------------------ scheduling
@pytest.mark.parametrize("rate", [20.0, 100.0])
def test_ticks_on_absolute_deadlines_without_drift(rate):
    arm = KinematicArm()
    loop = ControlLoop(arm, StreamDevice(twist=np.zeros(6)), rate_hz=rate)
    ticks = run_for(loop, 1.0)
    period = 1.0 / rate
    # Every tick wakes at (or just after) start + k * period: lateness never accumulates.
    late = np.array([tk.late for tk in ticks])
    assert np.all(late >= -1e-4)
    assert np.median(late) < 0.005
    assert abs(len(ticks) - rate * 1.0) <= 2 + loop.overruns
    # Tick index k ran at t ≈ k * period (plus lateness), so the clock did not drift.
    t = np.array([tk.t for tk in ticks])
    idx = np.array([tk.index for tk in ticks])
    assert np.all(np.abs(t - idx * period - late) < 1e-6)
    assert np.median([tk.period for tk in ticks[1:]]) == pytest.approx(period, abs=0.003)


def test_late_tick_skips_ahead_and_counts_overruns():
    arm = KinematicArm()
    loop = ControlLoop(arm, StreamDevice(twist=np.zeros(6)), rate_hz=50.0, stall_timeout=0.5)
    def listener(tick):
        if tick.index == 5:
            time.sleep(0.1)  # five periods
    loop.add_listener(listener)
    ticks = run_for(loop, 0.6)
    idx = [tk.index for tk in ticks]
    assert loop.overruns >= 4
    after = idx[idx.index(5) + 1]
    assert after >= 10  # skipped to the current deadline rather than replaying the missed ticks
    assert all(tk.late < 0.02 for tk in ticks if tk.index > after)


def test_rate_is_validated():
    with pytest.raises(ValueError, match="control rate"):
        ControlLoop(KinematicArm(), StreamDevice(), rate_hz=500)
    with pytest.raises(ValueError, match="stall timeout"):
        ControlLoop(KinematicArm(), StreamDevice(), rate_hz=5, stall_timeout=0.1)
    with pytest.raises(TypeError, match="neither"):
        ControlLoop(KinematicArm(), object())


# ------------------------------------------------------------------ what gets commanded
def test_twist_is_integrated_at_the_speed_limit_and_filtered():
    arm = KinematicArm()
    dev = StreamDevice(twist=(1.0, 0, 0, 0, 0, 0), buttons={"gripper": True})
    loop = ControlLoop(arm, dev, rate_hz=20.0)
    ticks = run_for(loop, 0.5)
    steps = np.diff([p[0] for _, p in arm.servos])
    assert np.allclose(steps, arm.limits.max_linear_speed / 20.0)
    assert arm.gripper.commands == [0.0]  # sent once, on change
    assert all(tk.action.shape == (8,) and tk.action[7] == 0.0 for tk in ticks[1:])
    assert ticks[-1].buttons == {"gripper": True}


def test_target_does_not_wind_up_ahead_of_a_blocked_arm():
    arm = KinematicArm()
    arm.frozen = True  # the arm accepts targets but does not move (blocked by contact)
    loop = ControlLoop(arm, StreamDevice(twist=(1.0, 0, 0, 0, 0, 0.5)), rate_hz=50.0, max_lead=0.03,
                       max_lead_angle=0.2)
    ticks = run_for(loop, 0.6)
    lead = np.array([np.linalg.norm(tk.action[:3] - HOME[:3]) for tk in ticks])
    assert lead.max() <= 0.03 + loop.filter.max_step + 1e-9
    assert lead[-1] > 0.025  # it did advance up to the leash
    assert any("lead_limited" in tk.events for tk in ticks)
    from robots.safety import rotation_angle
    assert max(rotation_angle(HOME[3:], tk.action[3:7]) for tk in ticks) <= 0.2 + loop.filter.max_rot_step + 1e-9


def test_target_source_drives_the_arm_and_info_reaches_ticks():
    arm = KinematicArm()
    loop = ControlLoop(arm, Expert(), rate_hz=50.0)
    ticks = run_for(loop, 0.5)
    assert ticks[-1].info == {"expert_phase": "move"}
    assert ticks[-1].action[1] == pytest.approx(0.1 * ticks[-1].t, abs=1e-9)
    assert arm.gripper.commands == [1.0, 0.0]


def test_listener_exception_does_not_stop_the_loop():
    arm = KinematicArm()
    loop = ControlLoop(arm, Expert(), rate_hz=50.0)

    def broken(tick):
        raise RuntimeError("listener bug")
    loop.add_listener(broken)
    ticks = run_for(loop, 0.4)
    assert len(ticks) >= 15 and loop.listener_errors == len(ticks)


# ------------------------------------------------------------------ watchdog and e-stop
def test_unplugged_device_stops_the_arm_within_100ms_and_latches():
    arm = KinematicArm()
    dev = StreamDevice()
    loop = ControlLoop(arm, dev, rate_hz=20.0)
    ticks: list[Tick] = []
    loop.add_listener(ticks.append)
    loop.start()
    time.sleep(0.33)
    dev.unplug()
    time.sleep(0.3)
    n_servo_at_loss = sum(1 for ts, _ in arm.servos if ts <= dev.lost_at)
    loop.stop()
    stop_latency = arm.stops[0] - dev.lost_at
    assert 0 <= stop_latency < 0.1, stop_latency
    assert all(ts <= arm.stops[0] for ts, _ in arm.servos)  # nothing commanded after the stop
    assert len(arm.servos) == n_servo_at_loss
    assert loop.fault == "input_lost"
    assert any("input_lost" in tk.events for tk in ticks)
    assert not ticks[-1].commanding and ticks[-1].fault == "input_lost"
    with pytest.raises(Exception, match="still disconnected"):
        loop.reset_estop()


def test_stream_that_stops_mid_motion_holds_then_resumes():
    arm = KinematicArm()
    dev = StreamDevice()
    loop = ControlLoop(arm, dev, rate_hz=20.0, stall_timeout=0.1)
    ticks: list[Tick] = []
    loop.add_listener(ticks.append)
    loop.start()
    time.sleep(0.3)
    dev.freeze()
    time.sleep(0.4)
    stop_latency = arm.stops[0] - dev.lost_at
    held_pose = arm.pose.copy()
    dev._frozen_at = None  # the stream comes back
    time.sleep(0.3)
    loop.stop()
    assert 0.1 <= stop_latency < 0.1 + 0.03, stop_latency  # stall timeout + watchdog reaction
    assert any("input_stalled" in tk.events for tk in ticks)
    assert any("input_resumed" in tk.events for tk in ticks)
    assert arm.pose[0] > held_pose[0] + 0.02  # moving again after the stream resumed
    assert loop.fault == ""


def test_blocked_control_thread_is_stopped_by_the_watchdog():
    arm = KinematicArm()
    loop = ControlLoop(arm, Expert(), rate_hz=20.0, stall_timeout=0.1)
    ticks: list[Tick] = []
    loop.add_listener(ticks.append)
    loop.start()
    time.sleep(0.2)
    arm.block.clear()  # the next servo call hangs, as a wedged driver would
    time.sleep(0.4)
    # Stall timeout (0.1 s) + watchdog poll + the bounded wait for the command lock.
    assert arm.stops and 0.09 <= arm.stops[0] - arm.hung_at < 0.1 + 0.03
    arm.block.set()
    time.sleep(0.3)
    loop.stop()
    assert any("loop_stalled" in tk.events for tk in ticks)
    assert any("loop_resumed" in tk.events for tk in ticks)


def test_estop_latches_until_reset():
    arm = KinematicArm()
    loop = ControlLoop(arm, StreamDevice(), rate_hz=50.0)
    ticks: list[Tick] = []
    loop.add_listener(ticks.append)
    loop.start()
    time.sleep(0.2)
    t_estop = time.monotonic()
    loop.estop()
    assert arm.stops and arm.stops[0] - t_estop < 0.03  # stopped on the caller's thread, not next tick
    time.sleep(0.3)
    assert not [ts for ts, _ in arm.servos if ts > arm.stops[0]]
    n_ticks_estopped = sum(1 for tk in ticks if tk.fault == "estop")
    assert n_ticks_estopped >= 10  # state keeps flowing while nothing is commanded
    pose_at_reset = arm.pose.copy()
    loop.reset_estop()
    time.sleep(0.2)
    loop.stop()
    first = next(p for ts, p in arm.servos if ts > arm.stops[0])
    assert np.linalg.norm(first[:3] - pose_at_reset[:3]) <= loop.filter.max_step + 1e-9
    assert ticks[-1].commanding and ticks[-1].fault == ""


def test_arm_disconnect_latches_a_fault_and_stops():
    arm = KinematicArm()
    loop = ControlLoop(arm, Expert(), rate_hz=50.0)
    ticks: list[Tick] = []
    loop.add_listener(ticks.append)
    loop.start()
    time.sleep(0.2)
    arm.fail_state = True
    time.sleep(0.2)
    loop.stop()
    assert loop.fault.startswith("arm_disconnected")
    assert len(ticks) >= 15  # the loop kept ticking (the GUI must still see it)
    assert not ticks[-1].commanding


# ------------------------------------------------------------------ session and CLI (no devices needed)
@pytest.mark.parametrize("kwargs,match", [
    ({"robot": "ur5"}, "unknown robot"),
    ({"robot": "franka:10.0.0.2", "camera": "sim"}, "needs a simulated robot"),
    ({"robot": "xarm6:10.0.0.3", "camera": "none", "input": "scripted"}, "needs a simulated robot"),
    ({"rate_hz": 250}, "control rate"),
])
def test_session_rejects_bad_device_choices_in_one_line(kwargs, match):
    from app.session import DeviceSession
    from robots.base import DeviceError

    with pytest.raises(DeviceError, match=match) as err:
        DeviceSession(**kwargs)
    assert "\n" not in str(err.value)


def test_demo_cli_reports_bad_devices_with_exit_code_2(capsys):
    from app.cli import main

    assert main(["demo", "--robot", "franka:10.0.0.2", "--camera", "sim"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# ------------------------------------------------------------------ on the simulated xArm6
@pytest.fixture(scope="module")
def sim_xarm(sim_lab):
    return sim_lab("xarm6", task="pick_cube", seed=0, render_hz=2.0)


def _record_motion(lab, seconds: float) -> list[tuple[float, float, np.ndarray]]:
    """(wall stamp, sim time, ee xyz) at ~100 Hz; sim time makes speeds immune to a slowed sim.
    One raw state request per sample (it carries the sim time), to load the sim as little as possible."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = lab.call("arm_state")
        out.append((time.monotonic(), float(s["sim_time"]), np.asarray(s["ee_pose"])[:3].copy()))
        time.sleep(0.01)
    return out


def _stop_profile(samples, lost_at: float) -> tuple[float, float]:
    """Speed before the loss (m/s) and sim seconds from the loss until the EE moves < 10 mm/s."""
    wall = np.array([s[0] for s in samples])
    sim = np.array([s[1] for s in samples])
    xyz = np.array([s[2] for s in samples])
    v = np.linalg.norm(np.diff(xyz, axis=0), axis=1) / np.maximum(np.diff(sim), 1e-6)
    before = v[(wall[1:] < lost_at) & (wall[1:] > lost_at - 0.3)]
    sim_at_loss = float(np.interp(lost_at, wall, sim))
    after = np.nonzero((wall[:-1] > lost_at) & (v < 0.01))[0]
    assert after.size, "the arm never came to rest"
    # The window ending at the first slow interval: still moving until its start, at rest from its end.
    return float(np.max(before)), float(sim[after[0] + 1] - sim_at_loss)


def _run_until_loss(lab, arm, dev, mode: str, **kw):
    loop = ControlLoop(arm, dev, rate_hz=20.0, **kw)
    loop.start()
    pre = _record_motion(lab, 0.6)
    getattr(dev, mode)()
    post = _record_motion(lab, 0.4)
    loop.stop()
    # Stops before the loss would be false alarms on a live device; only a busy machine's late
    # control thread (loop_stalled) may legitimately cause one.
    early = [(round(t - dev.lost_at, 3), r) for t, r in loop.stop_calls if t < dev.lost_at]
    assert all(r == "loop_stalled" for _, r in early), early
    stops = [(t, r) for t, r in loop.stop_calls if t >= dev.lost_at and r != "loop_stopped"]
    return loop, pre + post, stops


def test_unplugged_device_stops_the_sim_arm_within_100ms(sim_xarm):
    lab, arm = sim_xarm
    dev = StreamDevice(twist=(0, 0.6, 0, 0, 0, 0))  # 0.12 m/s along +y
    loop, samples, stops = _run_until_loss(lab, arm, dev, "unplug")
    v_before, to_rest = _stop_profile(samples, dev.lost_at)
    print(f"sim xArm6 unplug: stop() {1e3 * (stops[0][0] - dev.lost_at):.1f} ms after the loss, "
          f"speed {1e3 * v_before:.0f} mm/s -> <10 mm/s after {1e3 * to_rest:.0f} ms (sim time)")
    assert 0 <= stops[0][0] - dev.lost_at < 0.1
    assert any(r == "input_lost" and t - dev.lost_at < 0.1 for t, r in stops)
    assert v_before > 0.05  # it really was moving
    # The loop streams 0.12 m/s in wall time; a sim starved of CPU (other jobs on the 2 cores) runs
    # slower than real time, so the same targets arrive faster in sim time and take longer to brake.
    realtime_ok = v_before < 1.5 * 0.12
    # to_rest is the end of the first slow sampling window: an upper bound that a loaded machine widens
    # (sampling every 10 ms asked, 20-50 ms seen under load), hence the margin over the 100 ms goal.
    assert to_rest < (0.15 if realtime_ok else 0.25), (v_before, to_rest)
    assert loop.fault == "input_lost"


def test_stream_stalling_mid_motion_stops_the_sim_arm(sim_xarm):
    lab, arm = sim_xarm
    dev = StreamDevice(twist=(0, -0.6, 0, 0, 0, 0))
    loop, samples, stops = _run_until_loss(lab, arm, dev, "freeze", stall_timeout=0.1)
    v_before, to_rest = _stop_profile(samples, dev.lost_at)
    print(f"sim xArm6 stalled stream: stop() {1e3 * (stops[0][0] - dev.lost_at):.1f} ms after the last "
          f"fresh input, at rest after {1e3 * to_rest:.0f} ms (sim time)")
    assert stops[0][1] in ("input_stalled", "loop_stalled")
    # The stall is only knowable after the 100 ms timeout; the watchdog reacts within a few ms of it.
    assert 0.1 <= stops[0][0] - dev.lost_at < 0.1 + 0.05
    assert v_before > 0.05 and to_rest < (0.2 if v_before < 1.5 * 0.12 else 0.3)


class _ThroughTheTable:
    """TargetSource that asks to drive the tool 10 cm below the table, then sideways."""

    def __init__(self, start: np.ndarray):
        self.start = start

    def next_target(self, state, frame, t):
        goal = self.start.copy()
        goal[2] = -0.10
        goal[0] += 0.05 * min(t, 1.0)
        # Always ask for a point 5 cm beyond the current one so the jump check does not hold it.
        step = goal[:3] - state.ee_pose[:3]
        req = state.ee_pose.copy()
        req[:3] += step * min(1.0, 0.05 / max(np.linalg.norm(step), 1e-9))
        req[3:] = self.start[3:]
        return req, 1.0, {}


def test_sim_arm_never_leaves_the_workspace(sim_xarm):
    lab, arm = sim_xarm
    start = arm.state().ee_pose
    loop = ControlLoop(arm, _ThroughTheTable(start), rate_hz=20.0)
    ticks: list[Tick] = []
    loop.add_listener(ticks.append)
    loop.start()
    samples = _record_motion(lab, 2.5)
    loop.stop()
    lo_z = arm.limits.workspace.lo[2]
    zs = np.array([s[2][2] for s in samples])
    actions = np.array([tk.action for tk in ticks])
    assert np.all(actions[:, 2] >= lo_z)  # every command respected the box
    # The sim servo overshoots a sudden stop by a few mm (measured ≤ 6 mm at 0.2 m/s).
    assert zs.min() > lo_z - 0.008
    assert zs[-1] < lo_z + 0.01  # it did go down to the floor of the box
    assert any("clamped_workspace" in tk.events for tk in ticks)
    steps = np.linalg.norm(np.diff(actions[:, :3], axis=0), axis=1)
    # After a watchdog hold (a busy machine) the target restarts from the measured pose: not a step.
    resumed = np.array([any(e.endswith("_resumed") for e in tk.events) for tk in ticks[1:]])
    assert steps[~resumed].max() <= loop.filter.max_step + 1e-9
    arm.move_to(start)  # leave the arm where the next test expects it


# ------------------------------------------------------------------ on the simulated FR3 (franky client)
def test_unplugged_device_stops_the_sim_franka_within_100ms():
    from robots.sim.lab import SimLab

    with SimLab.start("franka", task="pick_cube", seed=0, render_hz=2.0) as lab:
        arm = lab.arm()
        arm.connect()
        dev = StreamDevice(twist=(0, 0.5, 0, 0, 0, 0))  # 0.125 m/s along +y
        loop = ControlLoop(arm, dev, rate_hz=20.0)
        samples: list[tuple[float, np.ndarray]] = []

        def record(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                s = arm.state()
                samples.append((s.stamp, s.ee_pose[:3].copy()))
                time.sleep(0.01)
        loop.start()
        record(0.5)
        # Unplug mid-motion: wait (up to 3 s) until the arm is really moving at teleop speed.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            record(0.1)
            (t0, p0), (t1, p1) = samples[-8], samples[-1]
            if np.linalg.norm(p1 - p0) / (t1 - t0) > 0.08:
                break
        dev.unplug()
        record(0.5)
        loop.stop()
    stops = [(t, r) for t, r in loop.stop_calls if t >= dev.lost_at and r != "loop_stopped"]
    wall = np.array([s[0] for s in samples])
    xyz = np.array([s[1] for s in samples])
    v = np.linalg.norm(np.diff(xyz, axis=0), axis=1) / np.maximum(np.diff(wall), 1e-6)
    v_before = float(np.max(v[(wall[1:] < dev.lost_at) & (wall[1:] > dev.lost_at - 0.3)]))
    slow = np.nonzero((wall[:-1] > dev.lost_at) & (v < 0.01))[0]
    assert slow.size, "the FR3 never came to rest"
    to_rest = float(wall[slow[0] + 1] - dev.lost_at)
    print(f"sim FR3 unplug: stop() {1e3 * (stops[0][0] - dev.lost_at):.1f} ms after the loss, "
          f"speed {1e3 * v_before:.0f} mm/s -> <10 mm/s after {1e3 * to_rest:.0f} ms (wall time, franky-sim)")
    assert 0 <= stops[0][0] - dev.lost_at < 0.1
    assert any(r == "input_lost" for _, r in stops)
    assert v_before > 0.05
    # The stop command is the loop's job (above). How fast the FR3 then brakes is franky's stop motion
    # under FrankaArm's relative_dynamics_factor 0.2: measured 150-310 ms from ~0.25 m/s here.
    assert to_rest < 0.4


def test_invalid_arm_state_latches_a_fault_instead_of_killing_the_loop():
    """A driver that reports NaN (e.g. while its connection drops) must stop commands, not the thread."""
    import math

    arm = _KinematicArmForNan()
    src = _ConstantTarget(arm.pose.copy())
    loop = ControlLoop(arm, src, rate_hz=50.0)
    ticks = []
    loop.add_listener(ticks.append)
    loop.start()
    try:
        time.sleep(0.1)
        arm.poison = True
        time.sleep(0.15)
        assert loop.running  # the control thread survived
        assert loop.fault.startswith("arm_error") and "invalid pose" in loop.fault
        n = arm.servo_calls
        time.sleep(0.1)
        assert arm.servo_calls == n  # nothing commanded while faulted
        assert ticks and not ticks[-1].commanding and not math.isnan(ticks[-1].t)
    finally:
        loop.stop()


class _KinematicArmForNan:
    name = "xarm6"
    dof = 6

    def __init__(self):
        from robots.safety import default_limits

        self.limits = default_limits("xarm6")
        self.pose = np.array([0.4, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0])
        self.poison = False
        self.servo_calls = 0

        class _G:
            def command(self, opening):
                pass
        self.gripper = _G()

    def state(self):
        from robots.base import ArmState

        pose = np.full(7, np.nan) if self.poison else self.pose.copy()
        return ArmState(stamp=time.monotonic(), ee_pose=pose, joint_pos=np.zeros(6), gripper=1.0)

    def servo(self, target):
        self.servo_calls += 1

    def stop(self):
        pass


class _ConstantTarget:
    def __init__(self, pose):
        self.pose = pose

    def next_target(self, state, frame, t):
        return self.pose, 1.0, {}


# ------------------------------------------------------------------ controller faults (robots/base.py ArmState.error)
class FaultyArm(KinematicArm):
    """KinematicArm whose controller can report an error, with a controller-level e-stop."""

    def __init__(self):
        super().__init__()
        self.error = ""
        self.estops: list[float] = []
        self.recovers = 0
        self.clears_on_recover = True

    def state(self):
        st = super().state()
        st.error = self.error
        return st

    def estop(self):
        self.estops.append(time.monotonic())
        self.error = "e-stopped on the controller"

    def recover(self):
        self.recovers += 1
        if self.clears_on_recover:
            self.error = ""


def test_controller_error_latches_and_only_recover_clears_it():
    from robots.base import DeviceError

    arm = FaultyArm()
    loop = ControlLoop(arm, Expert(), rate_hz=50.0)
    ticks: list[Tick] = []
    loop.add_listener(ticks.append)
    loop.start()
    try:
        time.sleep(0.2)
        arm.error = "Reflex: [cartesian_reflex]"
        time.sleep(0.1)
        assert loop.fault == "arm_fault: Reflex: [cartesian_reflex]"
        t_fault = time.monotonic()
        time.sleep(0.2)
        assert not [ts for ts, _ in arm.servos if ts > t_fault + 0.03]  # nothing commanded while faulted
        arm.clears_on_recover = False
        with pytest.raises(DeviceError, match="still reports a fault"):
            loop.recover()
        assert loop.fault.startswith("arm_fault")
        arm.clears_on_recover = True
        loop.recover()
        assert loop.fault == "" and arm.recovers == 2
        time.sleep(0.15)
        assert ticks[-1].commanding and ticks[-1].fault == ""
    finally:
        loop.stop()


def test_estop_stops_the_controller_and_reset_leaves_the_arm_faulted_until_recover():
    arm = FaultyArm()
    loop = ControlLoop(arm, StreamDevice(), rate_hz=50.0)
    loop.start()
    try:
        time.sleep(0.15)
        loop.estop()
        assert arm.estops, "the controller's own stop was not used"
        loop.reset_estop()
        time.sleep(0.1)
        assert loop.fault.startswith("arm_fault: e-stopped")
        n = len(arm.servos)
        time.sleep(0.1)
        assert len(arm.servos) == n
        loop.recover()
        time.sleep(0.1)
        assert len(arm.servos) > n
    finally:
        loop.stop()


def test_arm_outside_workspace_at_start_is_a_fault_not_a_walk_back():
    arm = KinematicArm()
    arm.pose = np.array([0.5, 0.0, 0.85, 1.0, 0.0, 0.0, 0.0])  # 15 cm above the franka box's ceiling
    loop = ControlLoop(arm, Expert(), rate_hz=50.0)
    ticks = run_for(loop, 0.3)
    assert loop.fault.startswith("outside_workspace") and "0.85" in loop.fault
    assert not arm.servos and not any(t.commanding for t in ticks)
