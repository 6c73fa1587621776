"""Annotation model, undoable operations, crash-safe storage in the episode, agreement scores."""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from recorder.annotations import (STORE_PATH, AcceptAll, AnnotationDoc, AnnotationError, Delete, Insert, Merge,
                                  MoveBoundary, Relabel, Segment, SetField, Split, boundary_agreement,
                                  krippendorff_alpha, load_annotations, quality_alpha, read_store, save_annotations)
from recorder.episode import EpisodeReader
from synthetic_pick_place import pick_place, write_episode

ROOT = Path(__file__).resolve().parents[1]


def _doc(bounds=(0, 10, 25, 40), n=50, annotator="alice"):
    segs = [Segment(a, b, p, f"s{i}") for i, (a, b, p) in enumerate(zip(bounds, bounds[1:], ["move", "grasp", "lift"]))]
    return AnnotationDoc(annotator, n, tuple(segs))


# ---------------------------------------------------------------- operations


def test_each_operation_and_its_inverse():
    doc = _doc()
    cases = [
        (MoveBoundary(0, 12), lambda d: (d[0].end, d[1].start) == (12, 12)),
        (MoveBoundary(2, 45), lambda d: d[2].end == 45),            # free end moves alone
        (MoveBoundary(1, 8, "start"), lambda d: (d[0].end, d[1].start) == (8, 8)),
        (Split(1, 20), lambda d: len(d) == 4 and (d[1].end, d[2].start) == (20, 20)),
        (Merge(0), lambda d: len(d) == 2 and d[0].end == 25 and d[0].primitive == "move"),
        (Relabel(2, "transport"), lambda d: d[2].primitive == "transport"),
        (SetField(1, "quality", 2), lambda d: d[1].quality == 2),
        (SetField(1, "instruction", "grasp it"), lambda d: d[1].instruction == "grasp it"),
        (Delete(1), lambda d: len(d) == 2 and d.boundaries() == [10, 25, 40]),
        (AcceptAll(), lambda d: all(s.source == "human" and s.quality == 3 for s in d)),
    ]
    for op, check in cases:
        new, inverse = doc.apply(op)
        assert check(new), op
        back, again = new.apply(inverse)
        assert back == doc, op
        assert back.apply(again)[0] == new  # redo after undo


def test_bad_edits_raise_one_line_and_change_nothing():
    doc = _doc()
    before = doc.to_dict()
    for op in [MoveBoundary(0, 25), MoveBoundary(0, 0), Split(0, 10), Merge(2), Relabel(0, "fly"),
               SetField(0, "quality", 4), SetField(0, "start", 3), Delete(7), Insert(Segment(5, 12, "wait"))]:
        with pytest.raises(AnnotationError) as err:
            doc.apply(op)
        assert "\n" not in str(err.value)
    assert doc.to_dict() == before


def test_invariants_checked_on_construction():
    with pytest.raises(AnnotationError, match="overlaps"):
        AnnotationDoc("a", 50, (Segment(0, 10, "move"), Segment(5, 20, "lift")))
    with pytest.raises(AnnotationError, match="past the episode"):
        AnnotationDoc("a", 15, (Segment(0, 20, "move"),))
    with pytest.raises(AnnotationError, match="empty"):
        Segment(5, 5, "move")


ops = st.one_of(
    st.builds(MoveBoundary, st.integers(0, 6), st.integers(-2, 60), st.sampled_from(["start", "end"])),
    st.builds(Split, st.integers(0, 6), st.integers(0, 60)),
    st.builds(Merge, st.integers(0, 6)),
    st.builds(Relabel, st.integers(0, 6), st.sampled_from(["lift", "place", "nope"])),
    st.builds(SetField, st.integers(0, 6), st.sampled_from(["quality", "confidence"]), st.integers(-1, 4)),
    st.builds(Delete, st.integers(0, 6)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(ops, max_size=12))
def test_random_edit_sequences_undo_to_the_start(sequence):
    doc = start = _doc()
    undo = []
    for op in sequence:
        try:
            doc, inv = doc.apply(op)
        except AnnotationError:
            continue
        undo.append(inv)
        AnnotationDoc(doc.annotator, doc.n_frames, doc.segments)  # invariants still hold
    for inv in reversed(undo):
        doc, _ = doc.apply(inv)
    assert doc == start


# ---------------------------------------------------------------- agreement


def test_krippendorff_alpha_matches_krippendorff_2011_worked_example():
    # "Computing Krippendorff's Alpha-Reliability" (Krippendorff 2011), 4 coders x 12 units, missing data.
    N = None
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
            [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]]
    assert krippendorff_alpha(data, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(data, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(data, "interval") == pytest.approx(0.849, abs=5e-4)


def _alpha_by_hand(data, level):
    """The hand-written coincidence-matrix α that krippendorff_alpha used before the package."""
    arr = np.array([[np.nan if v is None else float(v) for v in row] for row in data], dtype=float)
    values = np.unique(arr[np.isfinite(arr)])
    idx = {v: i for i, v in enumerate(values)}
    v = len(values)
    o = np.zeros((v, v))
    for unit in arr.T:
        present = unit[np.isfinite(unit)]
        if len(present) < 2:
            continue
        counts = np.zeros(v)
        for x in present:
            counts[idx[x]] += 1
        o += (np.outer(counts, counts) - np.diag(counts)) / (len(present) - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if level == "nominal":
        delta = 1.0 - np.eye(v)
    elif level == "interval":
        delta = (values[:, None] - values[None, :]) ** 2
    else:
        cum = np.cumsum(n_c)
        delta = np.zeros((v, v))
        for c in range(v):
            for k in range(v):
                lo, hi = min(c, k), max(c, k)
                delta[c, k] = (cum[hi] - (cum[lo - 1] if lo > 0 else 0) - (n_c[c] + n_c[k]) / 2) ** 2
    d_e = (np.outer(n_c, n_c) * delta).sum() / (n - 1)
    return 1.0 if d_e == 0 else float(1.0 - (o * delta).sum() / d_e)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_krippendorff_package_agrees_with_the_hand_written_alpha(level):
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(300):
        coders, units = rng.integers(2, 6), rng.integers(1, 25)
        data = rng.integers(0, rng.integers(1, 6), (coders, units)).astype(float) * rng.choice([1, 0.5, 3])
        data[rng.random((coders, units)) < rng.uniform(0, 0.5)] = np.nan
        if not (np.isfinite(data).sum(0) >= 2).any():
            with pytest.raises(ValueError, match="no unit has two or more values"):
                krippendorff_alpha(data, level)
            continue
        assert krippendorff_alpha(data, level) == pytest.approx(_alpha_by_hand(data, level), abs=1e-9)
        checked += 1
    assert checked > 200
    assert krippendorff_alpha([[2, 2, None], [2, 2, 3]], level) == 1.0 == _alpha_by_hand([[2, 2, None], [2, 2, 3]], level)


def test_alpha_extremes():
    assert krippendorff_alpha([[0, 1, 2, 3], [0, 1, 2, 3]]) == pytest.approx(1.0)
    assert krippendorff_alpha([[0, 3, 0, 3], [3, 0, 3, 0]]) < 0


def test_quality_alpha_and_boundary_agreement_between_annotators():
    a = _doc(annotator="alice")
    a = AnnotationDoc("alice", 50, tuple(s.__class__(**{**s.to_dict(), "quality": q}) for s, q in zip(a, [3, 2, 0])))
    b = AnnotationDoc("bob", 50, (Segment(0, 12, "move", quality=3), Segment(12, 24, "grasp", quality=2),
                                  Segment(24, 40, "lift", quality=1)))
    assert quality_alpha([a, b]) == pytest.approx(krippendorff_alpha([[3, 2, 0], [3, 2, 1]]))
    assert boundary_agreement(a, b, tol=3) == 1.0
    assert boundary_agreement(a, b, tol=1) == pytest.approx(2 / 3)  # 10 vs 12 misses


# ---------------------------------------------------------------- storage


@pytest.fixture()
def episode(tmp_path):
    syn = pick_place(0)
    return write_episode(tmp_path / "ep.h5", syn), len(syn.gripper)


def test_save_load_roundtrip_keeps_other_annotators_and_the_episode_valid(episode):
    path, n = episode
    assert load_annotations(path) == {}
    alice = AnnotationDoc("alice", n, (Segment(0, 10, "move", "move the gripper forward", quality=3),))
    bob = AnnotationDoc("bob", n, (Segment(5, 30, "grasp", confidence=1, source="human"),))
    assert save_annotations(path, alice) == 1  # first save allocates the store (on a copy)
    assert save_annotations(path, bob) == 2    # later saves write a slot in place
    alice2, _ = alice.split(0, 4)
    assert save_annotations(path, alice2) == 3
    got = load_annotations(path)
    assert got == {"alice": alice2, "bob": bob}
    with EpisodeReader(path) as r:  # the recorder's reader still validates the file
        assert r.n_frames == n and r.rgb(7)[0, 0, 0] == 7


def test_torn_write_falls_back_to_previous_version(episode):
    path, n = episode
    v1 = AnnotationDoc("alice", n, (Segment(0, 10, "move"),))
    save_annotations(path, v1)
    save_annotations(path, AnnotationDoc("alice", n, (Segment(0, 20, "lift"),)))
    import h5py
    with h5py.File(path, "r") as f:
        offset, size = f[STORE_PATH].id.get_offset(), f[STORE_PATH].shape[0] // 2
    version, _ = read_store(path)
    # Simulate a crash halfway through writing version 3 into the slot holding version 1.
    with open(path, "r+b") as fh:
        target = 0 if version % 2 == 0 else 1
        fh.seek(offset + target * size)
        blob = fh.read(64)
        fh.seek(offset + target * size + 8)
        fh.write(b"\x03" + bytes(40))
    assert read_store(path)[0] == 2
    assert load_annotations(path)["alice"].segments[0].end == 20


def test_store_grows_when_the_payload_outgrows_its_slot(episode, monkeypatch):
    import recorder.annotation_store as store
    path, n = episode
    monkeypatch.setattr(store, "DEFAULT_SLOT_BYTES", 4096)
    save_annotations(path, AnnotationDoc("alice", n, (Segment(0, 5, "move"),)))
    many = tuple(Segment(i, i + 1, "move", "x" * 40) for i in range(n))
    save_annotations(path, AnnotationDoc("alice", n, many))
    assert len(load_annotations(path)["alice"]) == n


def test_missing_file_is_one_line_error(tmp_path):
    with pytest.raises(AnnotationError) as err:
        save_annotations(tmp_path / "nope.h5", AnnotationDoc("a", 5))
    assert "nope.h5" in str(err.value) and "\n" not in str(err.value)


_SAVER = textwrap.dedent("""
    import sys
    import h5py, hdf5plugin  # imported before "ready" so the kill lands in saves, not imports
    from recorder.annotations import AnnotationDoc, Segment, save_annotations
    path, n, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print("ready", flush=True)
    k = start
    while True:
        segs = tuple(Segment(i * 3, i * 3 + 3, "move", f"v{k}") for i in range(k % 7 + 1))
        save_annotations(path, [AnnotationDoc("alice", n, segs), AnnotationDoc("bob", n, segs[:1])])
        print(k, flush=True)
        k += 1
""")


def _check_consistent(path, n):
    docs = load_annotations(path)
    if not docs:
        return None
    a, b = docs["alice"], docs["bob"]
    k = int(a[0].instruction[1:])
    assert all(s.instruction == f"v{k}" for s in a) and len(a) == k % 7 + 1
    assert b[0].instruction == f"v{k}"  # both annotators from the same save: never a mix
    with EpisodeReader(path) as r:
        assert r.n_frames == n
    return k


def test_sigkill_during_saves_never_corrupts_or_mixes(tmp_path):
    syn = pick_place(2)
    path = write_episode(tmp_path / "kill.h5", syn)
    n = len(syn.gripper)
    rng = random.Random(1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    last = None
    kills = 0
    for trial in range(20):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path), str(n), str((last or 0) + 1)],
                                stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        assert proc.stdout.readline().strip() == "ready"
        # early trials hit the one-time store creation (a file copy), later ones the slot writes
        time.sleep(rng.uniform(0.0, 0.03 if trial < 5 else 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        kills += 1
        done = [int(x) for x in out.split()]
        k = _check_consistent(path, n)
        if done:
            # the last reported save is durable; one more may have completed before the kill
            assert k in (done[-1], done[-1] + 1)
        elif last is not None:
            assert k in (last, last + 1)
        last = k if k is not None else last
    print(f"{kills} SIGKILLs, {last} saves survived consistently")
    assert kills == 20 and last is not None and last >= 40  # the kills did land among many saves
