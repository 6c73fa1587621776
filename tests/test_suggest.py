"""policies/suggest.py: top-k primitives with confidence per segment, from an episode file or frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.encoder import EncoderConfig, EncoderError, RoboActCLIP
from policies.suggest import Suggester, suggest
from recorder.annotations import Segment
from recorder.episode import EpisodeReader
from recorder.export import clip_indices

ACTIONS = ["grasp", "lift", "lower", "move", "place"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = EncoderConfig(actions=ACTIONS, objects=["red cube", "bin"], frame_size=(24, 32), d_model=32, embed_dim=16)
    model = RoboActCLIP(cfg, torch.randn(len(ACTIONS) * 2, 384))
    with torch.no_grad():  # untrained weights give flat scores; sharpen so the ranking is informative
        model.logit_scale.fill_(np.log(100.0))
    return model.save(tmp_path_factory.mktemp("ck") / "encoder.pt")


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    from synthetic_pick_place import pick_place, write_episode

    return write_episode(tmp_path_factory.mktemp("ep") / "ep.h5", pick_place(seed=2))


def test_top_k_matches_the_model_on_the_same_frames(checkpoint, episode):
    with EpisodeReader(episode) as r:
        frames = np.stack([r.rgb(i) for i in range(len(r.time))])
    spans = [(0, 30), (30, 45), (45, len(frames))]
    s = Suggester(checkpoint)
    got = s.suggest(frames, spans, k=3)
    assert len(got) == 3 and all(len(g) == 3 for g in got)
    model = RoboActCLIP.load(checkpoint)
    for (a, b), sug in zip(spans, got):
        clip = torch.from_numpy(frames[clip_indices(a, b, 16)]).permute(0, 3, 1, 2)[None]
        p = model.action_probs(clip)[0].numpy()
        order = np.argsort(-p)[:3]
        assert [name for name, _ in sug] == [ACTIONS[i] for i in order]
        np.testing.assert_allclose([c for _, c in sug], p[order], rtol=1e-4)
        assert sug[0][1] >= sug[1][1] >= sug[2][1] and 0 < sug[0][1] <= 1
    # Different segments look different: the suggestions are not one constant answer.
    assert len({tuple(np.round([c for _, c in g], 4)) for g in got}) == 3


def test_episode_path_and_segment_forms_agree(checkpoint, episode):
    with EpisodeReader(episode) as r:
        frames = np.stack([r.rgb(i) for i in range(len(r.time))])
    segs = [Segment(start=5, end=40, primitive="move"), {"start": 40, "end": 60}, (60, 80)]
    by_path = suggest(episode, segs, checkpoint, k=2)
    by_frames = suggest(list(frames), [(5, 40), (40, 60), (60, 80)], checkpoint, k=2)
    assert [[n for n, _ in g] for g in by_path] == [[n for n, _ in g] for g in by_frames]
    np.testing.assert_allclose([[c for _, c in g] for g in by_path], [[c for _, c in g] for g in by_frames],
                               rtol=1e-5)
    assert suggest(episode, [], checkpoint) == []


def test_probabilities_sum_to_one(checkpoint, episode):
    p = Suggester(checkpoint).probabilities(episode, [(0, 20), (20, 21)])  # a 1-frame segment repeats it
    assert p.shape == (2, len(ACTIONS))
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)


def test_bad_requests_are_one_line_errors(checkpoint, episode, tmp_path):
    with pytest.raises(EncoderError, match=r"segment \[50, 9999\) is outside"):
        suggest(episode, [(50, 9999)], checkpoint)
    with pytest.raises(EncoderError, match="outside 0..10 or empty"):
        suggest(np.zeros((10, 24, 32, 3), np.uint8), [(4, 4)], checkpoint)
    with pytest.raises(EncoderError, match="uint8 images"):
        suggest(np.zeros((10, 24, 32), np.float32), [(0, 5)], checkpoint)
    with pytest.raises(EncoderError, match="no such checkpoint"):
        suggest(episode, [(0, 5)], tmp_path / "none.pt")
