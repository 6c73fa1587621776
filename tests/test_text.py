"""policies/text.py: the packaged MiniLM loads offline, embeds sensibly, and the disk cache spares reloads."""
from __future__ import annotations

import os

import numpy as np
import pytest

from policies.text import DIM, TextEncoder, TextEncoderError

GRASP = "Robot grasps red cube, action is grasp"


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    enc = TextEncoder(cache_dir=tmp_path_factory.mktemp("textcache"))
    vecs = enc.encode([GRASP, "a robot picks up a red block", "the weather is nice today", GRASP])
    return enc, vecs


def test_packaged_model_embeds_offline(real):
    enc, v = real
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert v.shape == (4, DIM) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(v[0], v[3])
    # A paraphrase is closer than an unrelated sentence: the vectors carry meaning.
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1
    assert enc.model_loads == 1  # the duplicate text was not encoded twice


def _no_model():
    raise AssertionError("the model must not load on a cache hit")


def test_disk_cache_serves_a_new_process_without_loading(real):
    enc, v = real
    fresh = TextEncoder(cache_dir=enc.cache_dir.parent, loader=_no_model)
    got = fresh.encode([GRASP, "the weather is nice today"])
    np.testing.assert_array_equal(got, v[[0, 2]])
    assert fresh.model_loads == 0


def test_torn_cache_file_is_recomputed(real):
    enc, v = real
    path = enc._disk_path(GRASP)
    path.write_bytes(b"\x93NUMPY garbage")
    fresh = TextEncoder(cache_dir=enc.cache_dir.parent, loader=lambda: enc._model)
    np.testing.assert_allclose(fresh.encode_one(GRASP), v[0], atol=1e-6)
    assert fresh.model_loads == 1
    np.testing.assert_allclose(np.load(path), v[0], atol=1e-6)  # and the file was rewritten


def test_cache_key_depends_on_text_and_model(tmp_path):
    a = TextEncoder(cache_dir=tmp_path, loader=_no_model)
    assert a.key("x") != a.key("y")
    b = TextEncoder(cache_dir=tmp_path, loader=_no_model)
    b.model_key = "other-model@1"
    assert a.key("x") != b.key("x")


def test_bad_input_is_one_line_error(tmp_path):
    enc = TextEncoder(cache_dir=tmp_path, loader=_no_model)
    with pytest.raises(TextEncoderError, match="must be a string"):
        enc.encode(["ok", 3])
