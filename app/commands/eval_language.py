"""`python main.py eval-language --checkpoint CK [CK …] --data PATHS…`: does the action expert follow
the instruction's direction? LA4VLA's DAR / DCS / SR / SS (policies/language_eval.py) under the paired
and the conflicting-state conditions, on held-out language-action segments, cloud masked and no
waypoints. Prints a markdown table; ``--json`` writes the figures.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("eval-language", help="instruction-following metrics (DAR/DCS/SR/SS) of the action expert",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", nargs="+", required=True, help="action-expert checkpoint(s) (.pt)")
    p.add_argument("--name", nargs="*", default=None,
                   help="table names for the checkpoints (default: each checkpoint's folder name)")
    p.add_argument("--data", nargs="+", required=True, metavar="FILE_OR_DIR",
                   help="held-out data: `main.py export la` .jsonl files or episode files/folders")
    p.add_argument("--min-quality", type=float, default=2.0, help="segments scored at least this (default 2)")
    p.add_argument("--la-unscored", action="store_true", help="also use segments nobody has scored yet")
    p.add_argument("--stride", type=int, default=4, help="one trial every N frames of a segment (default 4)")
    p.add_argument("--ddim-steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="diffusion noise and conflicting-state pairing")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.set_defaults(func=run)


def _finite(obj):
    """NaN (a metric undefined for the data, e.g. SR with one direction) → null: strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from policies.action_expert import ActionExpert
    from policies.datasets import load_la_records
    from policies.language_eval import build_trials, evaluate, markdown_table
    from policies.text import TextEncoderError
    from recorder.annotations import AnnotationError
    from recorder.export import ExportError
    from recorder.schema import EpisodeError

    names = args.name or [Path(c).parent.name or Path(c).stem for c in args.checkpoint]
    try:
        if len(names) != len(args.checkpoint):
            raise ValueError(f"{len(names)} --name for {len(args.checkpoint)} checkpoints")
        if args.stride < 1 or args.ddim_steps < 1:
            raise ValueError("--stride and --ddim-steps must be >= 1")
        models = [ActionExpert.load(c) for c in args.checkpoint]
        records = load_la_records(args.data, args.min_quality, args.la_unscored)
        if not records:
            raise ValueError("no language-action segments in --data (score them, or pass --la-unscored)")
        results, rows, text = {}, [], None
        from policies.text import TextEncoder

        for name, ck, model in zip(names, args.checkpoint, models):
            text = text or TextEncoder()
            # Each model sees the trials cut to its own horizon / history length.
            trials = build_trials(records, model.config, text, args.stride)
            res = evaluate(model, trials, args.ddim_steps, args.seed)
            labels, counts = np.unique(trials.label, return_counts=True)
            results[name] = {"checkpoint": str(ck), "lang_dim": model.config.lang_dim, "conditions": res,
                             "trials_per_direction": dict(zip(labels.tolist(), counts.tolist()))}
            rows += [(name, cond, m) for cond, m in res.items()]
    except (ValueError, OSError, RuntimeError, TextEncoderError, ExportError, EpisodeError, AnnotationError) as exc:
        print(f"eval-language: {(str(exc).splitlines() or [''])[0]}", file=sys.stderr)
        return 2
    print(markdown_table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"data": [str(d) for d in args.data], "stride": args.stride,
                                         "ddim_steps": args.ddim_steps, "seed": args.seed, "models": _finite(results)},
                                        indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
