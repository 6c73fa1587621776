"""Success statistics and the rollout report files (pure, no devices)."""
import csv
import json

import numpy as np
import pytest

from app.success import (TrialRecord, cumulative_curve, latency_stats, read_report, summarize,
                         wilson_interval, write_report)


@pytest.mark.parametrize("k,n,lo,hi", [
    (8, 10, 0.4902, 0.9433),  # textbook example (Agresti & Coull 1998; Newcombe 1998)
    (0, 20, 0.0, 0.1611),
    (20, 20, 0.8389, 1.0),
    (18, 20, 0.6990, 0.9721),
    (1, 2, 0.0945, 0.9055),
])
def test_wilson_matches_known_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-4)


def test_wilson_contains_point_estimate_and_narrows_with_n():
    widths = []
    for n in (5, 20, 80, 320):
        lo, hi = wilson_interval(n // 2, n)
        assert lo <= (n // 2) / n <= hi
        widths.append(hi - lo)
    assert all(a > b for a, b in zip(widths, widths[1:]))


def test_wilson_from_scipy_equals_the_closed_form():
    """wilson_interval is scipy's binomtest(...).proportion_ci("wilson"); the closed form it replaced
    (issue 13: libraries over hand-written code) must agree with it everywhere."""
    import math

    from scipy.stats import norm

    def closed_form(k, n, conf):
        z = float(norm.ppf(0.5 + conf / 2))
        p = k / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))

    for n in range(1, 61):
        for k in range(n + 1):
            for conf in (0.9, 0.95, 0.99):
                assert wilson_interval(k, n, conf) == pytest.approx(closed_form(k, n, conf), abs=1e-12)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError, match="successes <= n"):
        wilson_interval(3, 2)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_cumulative_curve():
    np.testing.assert_allclose(cumulative_curve([1, 0, 1, 1]), [1.0, 0.5, 2 / 3, 0.75])
    assert cumulative_curve([]).size == 0


def _trials():
    out = []
    for i, (ok, reason) in enumerate([(True, "success"), (False, "timeout"), (True, "success"),
                                      (False, "nan"), (True, "success")]):
        out.append(TrialRecord(i, "pick_cube", 1000 + i, "success" if ok else "failure", reason, 5.0 + i,
                               episode=f"ep{i}.h5", latency_p50_ms=20.0, latency_p99_ms=30.0, chunks=4))
    out.append(TrialRecord(5, "press_button", 7, "failure", "safety_stop", 3.0))
    return out


def test_summary_per_task():
    s = summarize(_trials())
    assert list(s) == ["pick_cube", "press_button"]
    pc = s["pick_cube"]
    assert (pc.trials, pc.successes, pc.rate) == (5, 3, 0.6)
    assert (pc.ci_low, pc.ci_high) == pytest.approx(wilson_interval(3, 5))
    assert pc.reasons == {"success": 3, "timeout": 1, "nan": 1}
    assert s["press_button"].rate == 0.0


def test_trial_record_rejects_unknown_outcome():
    with pytest.raises(ValueError, match="outcome"):
        TrialRecord(0, "pick_cube", 0, "maybe", "", 1.0)


def test_report_files_roundtrip(tmp_path):
    trials = _trials()
    paths = write_report(tmp_path / "run", trials, {"checkpoint": "x.pt", "title": "test run"},
                         latencies_s=[0.01, 0.02, 0.03, float("nan")])
    doc = json.loads(paths["json"].read_text())
    assert doc["summary"]["pick_cube"]["successes"] == 3
    assert doc["latency"]["n"] == 3 and doc["latency"]["p50_ms"] == pytest.approx(20.0)
    assert len(doc["trials"]) == 6 and doc["meta"]["checkpoint"] == "x.pt"
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["reason"] for r in rows] == [t.reason for t in trials]
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert read_report(tmp_path / "run")["summary"]["press_button"]["trials"] == 1


def test_read_report_bad_file(tmp_path):
    bad = tmp_path / "report.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a rollout report"):
        read_report(bad)
    with pytest.raises(FileNotFoundError, match="no rollout report"):
        read_report(tmp_path / "missing.json")


def test_latency_stats_empty():
    assert latency_stats([])["n"] == 0
