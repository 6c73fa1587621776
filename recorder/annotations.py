"""Segment annotations: one import for the data model, its operations, the store and agreement scores.

The code lives in one module per concern, re-exported here so callers import from one place:
recorder/annotation_model.py (segments, documents, undoable operations), recorder/annotation_store.py
(the crash-safe A/B store inside the episode file) and recorder/agreement.py (boundary F1,
Krippendorff's α). Their docstrings say how each works.
"""
from __future__ import annotations

from .agreement import (
    boundary_agreement,
    boundary_f1,
    krippendorff_alpha,
    match_boundaries,
    quality_alpha,
)
from .annotation_model import (
    CONFIDENCE_RANGE,
    EDITABLE_FIELDS,
    QUALITY_RANGE,
    SOURCES,
    AcceptAll,
    AnnotationDoc,
    AnnotationError,
    Delete,
    Insert,
    Merge,
    MoveBoundary,
    Operation,
    Relabel,
    Replace,
    Segment,
    SetField,
    Split,
    now_iso,
)
from .annotation_store import (
    DEFAULT_SLOT_BYTES,
    STORE_PATH,
    StoreError,
    create_store,
    load_annotations,
    read_store,
    rebuild_with_store,
    save_annotations,
)

__all__ = [
    "CONFIDENCE_RANGE", "DEFAULT_SLOT_BYTES", "EDITABLE_FIELDS", "QUALITY_RANGE", "SOURCES", "STORE_PATH",
    "AcceptAll", "AnnotationDoc", "AnnotationError", "Delete", "Insert", "Merge", "MoveBoundary", "Operation",
    "Relabel", "Replace", "Segment", "SetField", "Split", "StoreError", "boundary_agreement", "boundary_f1",
    "create_store", "krippendorff_alpha", "load_annotations", "match_boundaries", "now_iso", "quality_alpha",
    "read_store", "rebuild_with_store", "save_annotations",
]
