"""Colour-swap augmentation of the waypoint predictor (policies/colour_swap.py): the cubes' colours
change in the cloud and in the texts alike, and a predictor trained with it reads the colour word."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from policies.colour_swap import SWAP_COLOURS, ColourSwap, colour_masks, colour_words, rename_colours
from policies.keypoints import INITIAL_STATE, KeypointConfig, KeypointData, KeypointTrainConfig, evaluate, train_keypoints


class WordBag:
    """A text encoder for tests: the sum of one fixed random vector per word. Renamed texts ("go to
    the lime marker") get their own features, which a fixed table of sentences could not give."""

    def __init__(self, texts):
        self.texts = list(texts)
        self.features = torch.as_tensor(self.encode(self.texts))

    @staticmethod
    def encode(texts):
        out = np.zeros((len(texts), 384), np.float32)
        for i, t in enumerate(texts):
            for w in t.split():
                out[i] += np.random.default_rng(zlib.crc32(w.encode())).normal(0, 1, 384).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)

    def pair(self, a, b, c=None):
        parts = [self.features[torch.as_tensor(a)], self.features[torch.as_tensor(b)]]
        if c is not None:
            parts.append(self.features[torch.as_tensor(c)])
        return torch.cat(parts, dim=-1)


def test_masks_find_the_cube_colours_and_nothing_else():
    rgb = torch.tensor([[0.85, 0.12, 0.10], [0.42, 0.06, 0.01],  # red, lit and in shade
                        [0.15, 0.67, 0.19], [0.12, 0.30, 0.80],  # green, blue
                        [0.74, 0.67, 0.09], [0.30, 0.30, 0.31], [0.95, 0.45, 0.05]])  # button, arm, orange
    m = colour_masks(rgb)
    assert m["red"].tolist() == [True, True, False, False, False, False, False]
    assert m["green"].tolist() == [False, False, True, False, False, False, False]
    assert m["blue"].tolist() == [False, False, False, True, False, False, False]


def test_renaming_is_whole_words_and_simultaneous():
    assert rename_colours("stack the red cube on the green cube", {"red": "green", "green": "red"}) == \
        "stack the green cube on the red cube"
    assert rename_colours("a reddish redwood", {"red": "blue"}) == "a reddish redwood"
    assert colour_words("stack the red cube on the green cube") == ("red", "green")


def test_a_swap_recolours_points_and_texts_alike():
    texts = [INITIAL_STATE, "pick up the red cube", "lift the object"]
    swap = ColourSwap(texts, WordBag.encode, prob=1.0)
    cloud = torch.zeros(1, 4, 6)
    cloud[0, :, 3:] = torch.tensor([[0.85, 0.12, 0.10], [0.425, 0.06, 0.05], [0.3, 0.3, 0.3], [0.12, 0.30, 0.85]])
    feats = WordBag(texts).pair([2], [0], [1])
    out, f, maps = swap(cloud, feats, [torch.tensor([2]), torch.tensor([0]), torch.tensor([1])],
                        torch.Generator().manual_seed(3))
    red_to = maps[0]["red"]
    want = torch.tensor(SWAP_COLOURS[red_to])
    assert torch.allclose(out[0, 0, 3:], want, atol=1e-5)  # lit face: the new colour
    assert torch.allclose(out[0, 1, 3:], (want * 0.5).clamp(0, 1), atol=1e-5)  # shaded face stays shaded
    assert torch.equal(out[0, 2, 3:], cloud[0, 2, 3:])  # grey arm untouched
    assert torch.allclose(out[0, 3, 3:], torch.tensor(SWAP_COLOURS[maps[0]["blue"]]), atol=1e-5)
    d = 384
    assert torch.equal(f[0, :2 * d], feats[0, :2 * d])  # texts without a colour keep their features
    renamed = torch.as_tensor(WordBag.encode([f"pick up the {red_to} cube"])[0])
    assert torch.allclose(f[0, 2 * d:], renamed)
    assert torch.equal(cloud[0, 0, 3:], torch.tensor([0.85, 0.12, 0.10]))  # input untouched


def _markers(n: int, seed: int, swapped: bool, unseen: tuple[str, list] | None = None) -> tuple[KeypointData, list[str]]:
    """Grey clutter, a red and a blue cluster, and "go to the red marker": the red one is always the
    target, as the red cube is in every demo. With ``swapped`` the clusters trade colours and the
    instruction asks for the blue one — the target, now blue. ``unseen`` = (name, rgb): the target
    is painted that colour and the instruction names it (the other cluster stays red)."""
    texts = [INITIAL_STATE, "go to the red marker", "go to the blue marker"]
    if unseen is not None:
        texts.append(f"go to the {unseen[0]} marker")
    rng = np.random.default_rng(seed)
    lo = np.array([0.25, -0.35, 0.02])
    clouds, text, target = [], [], []
    for i in range(n):
        xyz = rng.uniform(lo, [0.75, 0.35, 0.15], size=(256, 3))
        rgb = np.full((256, 3), 0.5) + rng.normal(0, 0.03, (256, 3))
        a, b = rng.uniform(lo + 0.05, [0.7, 0.3, 0.1], size=(2, 3))
        xyz[:20], xyz[20:40] = a + rng.normal(0, 0.01, (20, 3)), b + rng.normal(0, 0.01, (20, 3))
        red, blue = [0.85, 0.12, 0.10], [0.12, 0.30, 0.85]  # the sim cubes'
        ca, cb = (blue, red) if swapped else (red, blue)
        if unseen is not None:
            ca, cb = unseen[1], red
        rgb[:20], rgb[20:40] = ca, cb
        clouds.append(np.concatenate([xyz, np.clip(rgb, 0, 1)], 1))
        text.append(3 if unseen is not None else 2 if swapped else 1)
        target.append(a)
    m = len(clouds)
    z = np.zeros(m)
    # The step text is the task instruction too (a one-step task).
    return KeypointData(np.asarray(clouds, np.float32), np.asarray(text), z.astype(int), np.asarray(target, np.float32),
                        z.astype(np.float32), z.astype(np.float32), np.arange(m), z.astype(int), z.astype(bool),
                        z.astype(bool), texts, [f"s{i}" for i in range(m)], {}, np.asarray(text)), texts


@pytest.mark.parametrize("prob", [0.0, 0.5])
def test_only_the_swap_trained_predictor_follows_the_colour_word(prob):
    """Trained on "go to the red marker" only, tested on "go to the blue marker" where the target is
    the blue one: without swaps the model goes for red points whatever the words (it never had to
    read them); with swaps it follows the word."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    train, texts = _markers(96, 0, swapped=False)
    test, _ = _markers(40, 1, swapped=True)
    cfg = KeypointConfig(n_points=256, width=32)
    model = train_keypoints(train, cfg, KeypointTrainConfig(steps=400, batch_size=16, lr=3e-3, augment=False,
                                                             colour_swap=prob, log_every=1000), WordBag(texts)).model
    err = evaluate(model, test, WordBag(texts))["all"]["median_cm"]
    if prob:
        assert err < 4.0, err
    test_errs.setdefault("err", {})[prob] = err
    if len(test_errs["err"]) == 2:
        assert test_errs["err"][0.5] < 0.5 * test_errs["err"][0.0], test_errs


test_errs: dict = {}


def test_colour_cues_find_a_colour_no_sample_had():
    """The colour table grounds a word the model never trained on: "teal" (a random vector to this
    test's text encoder) picks the teal cluster over the red one, which the model always went for."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    teal = ("teal", [0.05, 0.60, 0.60])  # the sim's colour variation's teal
    train, _ = _markers(96, 0, swapped=False)
    test, texts = _markers(40, 1, swapped=False, unseen=teal)
    train.texts = texts  # the same text ids, plus "go to the teal marker" for the test
    errs = {}
    for cues in (False, True):
        cfg = KeypointConfig(n_points=256, width=32, task_text=True, colour_cues=cues)
        model = train_keypoints(train, cfg, KeypointTrainConfig(steps=400, batch_size=16, lr=3e-3, augment=False,
                                                                 colour_swap=0.5, log_every=1000), WordBag(texts)).model
        errs[cues] = evaluate(model, test, WordBag(texts))["all"]["median_cm"]
    assert errs[True] < 4.0 and errs[False] > 10.0, errs


def test_named_colours_and_cues():
    from policies.colour_swap import colour_cues, named_colours

    refs = named_colours("stack the teal cube on the orange cube")
    assert np.isfinite(refs).all() and refs[0][1] > refs[0][0] and refs[1][0] > refs[1][2]  # teal, orange
    assert np.isnan(named_colours("press the button")).all()
    rgb = torch.tensor([[[0.05, 0.6, 0.6], [0.95, 0.45, 0.05], [0.3, 0.3, 0.31], [0.85, 0.12, 0.10]]])
    c = colour_cues(rgb, torch.as_tensor(refs)[None])[0]
    assert c[0, 0] > 0.8 and c[1, 1] > 0.8  # each cube lights up its own word's channel
    assert c[2].max() < 0.05 and c[3, 0] < 0.05 and c[3, 1] < 0.3  # grey arm, red cube: not teal, barely orange


def test_a_grey_name_is_told_by_lightness():
    """Chromaticity alone matches "white" to every grey point (the bin, the arm): lightness decides."""
    from policies.colour_swap import colour_cues, named_colours

    rgb = torch.tensor([[[0.92, 0.92, 0.92], [0.46, 0.46, 0.46], [0.30, 0.30, 0.31], [0.85, 0.12, 0.10]]])
    c = colour_cues(rgb, torch.as_tensor(named_colours("the white cube"))[None])[0, :, 0]
    assert c[0] > 0.9 and c[1] > 0.7  # lit and shaded faces of a white cube
    assert c[2] < 0.1 and c[3] < 0.05  # the grey arm, a red cube
