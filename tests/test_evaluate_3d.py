"""Evaluate tab's 3D page: the cloud the policy saw, the trial's waypoints and guidance, the predicted
chunk and the expert's keypoint — in a child process under xcb (Qt's offscreen platform has no GL)."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from gl_child import child_app, run_gl_checks

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.gui
def test_evaluate_3d_page_draws_cloud_chunk_keypoint_and_plan(tmp_path):
    r = run_gl_checks(__file__, str(tmp_path / "evaluate_3d.png"))
    assert r["built_on_open"] and not r["built_before"]  # no GL widget until the page is opened
    assert r["cloud_points"] == 600
    assert r["keypoint_visible"] and r["magenta_px"] > 10  # the keypoint diamond is drawn
    assert r["predicted_visible"] and r["waypoints"] == 3
    assert r["curve_is_the_trajectory"]  # the drawn spline is the trial trajectory's own samples
    assert r["cleared"]  # a new trial (no chunk, no plan) clears the last one's chunk and keypoint


def _gl_checks(png: str) -> dict:
    app, pump = child_app()
    from app.rollout import LiveState
    from widgets.evaluate_tab import EvaluateTab

    tab = EvaluateTab(None)
    tab.resize(1200, 700)
    tab.show()
    built_before = tab.scene3d is not None
    tab.view_tabs.setCurrentIndex(1)
    pump(0.5)
    view = tab.scene3d
    rng = np.random.default_rng(0)
    table = np.c_[rng.uniform(0.3, 0.7, (500, 2)) - [0, 0.2], np.zeros(500)]
    cube = rng.uniform(-0.02, 0.02, (100, 3)) + [0.5, 0.05, 0.02]
    cloud = np.r_[table, cube].astype(np.float32)
    down = [1.0, 0, 0, 0]
    chunk = np.array([np.r_[0.5, 0.05, 0.2 - 0.01 * i, down] for i in range(16)])
    guidance = np.array([np.r_[0.5, 0.05, 0.18 - 0.03 * i, down, 1.0] for i in range(4)])
    plan = np.array([[0.3, 0.0, 0.3], [0.5, 0.05, 0.12], [0.5, 0.05, 0.02]])
    from policies.runtime import timed_trajectory
    from policies.waypoints import trajectory_curve
    from robots.sim.tasks import Waypoint as TaskWaypoint

    traj = timed_trajectory(np.r_[plan[0], down], [TaskWaypoint(np.r_[p, down], 1.0, "move", dwell=0.3)
                                                   for p in plan[1:]])
    curve = trajectory_curve(traj)
    state = LiveState(phase="running", trial=0, n_trials=20, chunk=chunk, guidance=guidance, cloud=cloud,
                      keypoint=np.array([0.5, 0.05, 0.03]), plan=plan, plan_curve=curve)
    tab.show_state(state)
    pump(1.0)
    img = tab.grab()
    img.save(png)
    qimg = view.grab().toImage()
    a = np.array([[qimg.pixelColor(x, y).getRgb()[:3] for x in range(0, qimg.width(), 2)]
                  for y in range(0, qimg.height(), 2)])
    magenta = int(((a[..., 0] > 180) & (a[..., 1] < 130) & (a[..., 2] > 190)).sum())
    out = {"built_before": built_before, "built_on_open": view is not None,
           "cloud_points": int(len(view._xyz)), "keypoint_visible": bool(view.keypoint_marker.visible),
           "magenta_px": magenta, "predicted_visible": bool(view.predicted.visible),
           "waypoints": len(view.waypoints()),
           "curve_is_the_trajectory": bool(np.array_equal(np.asarray(view.spline.pos),
                                                          curve.astype(np.float32)))}
    tab.show_state(LiveState(phase="running", trial=1, n_trials=20))
    pump(0.2)
    out["cleared"] = not view.keypoint_marker.visible and not view.predicted.visible and not view.waypoints()
    tab.shutdown()
    return out


if __name__ == "__main__" and "--gl-checks" in sys.argv:
    sys.path.insert(0, str(ROOT))
    print(json.dumps(_gl_checks(sys.argv[-1])))
    sys.stdout.flush()
    os._exit(0)
