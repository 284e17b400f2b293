"""Expression: per-frame target landmarks of the new face for the whole shot.

SwapAnyHead-style retargeting (``recast.models.retarget``): the source's own expression is
neutralised, the plate's expression is carried over as deltas scaled by the ratio of eye and mouth
sizes, operator edits go on top, and the result is placed in the plate's pose at every frame.
"""

from __future__ import annotations

import numpy as np

from recast.contracts import ExpressionResult, SourceFaceResult, TrackResult
from recast.errors import UsageError
from recast.models.retarget import MODES, parse_edit, retarget_sequence
from recast.tasks.arrays import load_npz, save_npz
from recast.tasks.common import fetch, run_stage, scratch_dir, store_asset
from recast.tasks.segment import ANALYSIS_MEDIA_TYPE, load_analysis

METHOD = "expression_aware_retargeting"


def retarget(*, run_id: str | None, shot_id: str | None, track: TrackResult, source: SourceFaceResult, expression: str, edits: list[str]) -> ExpressionResult:
    """Target landmarks: the source's face with the plate's pose and (scaled) expression, plus edits."""
    if expression not in MODES:
        raise UsageError(f"expression mode '{expression}': choose from {', '.join(MODES)}")
    parsed = [parse_edit(e) for e in edits]  # validate before any work
    params = {"method": METHOD, "expression": expression, "edits": list(edits)}

    def compute() -> ExpressionResult:
        plate = load_npz(fetch(track.tracks))["landmarks"]
        src = load_analysis(source.analysis)["landmarks"]
        targets = retarget_sequence(plate, src, mode=expression, edits=parsed).astype(np.float32)
        valid = ~np.isnan(targets).any(axis=(1, 2))
        with scratch_dir("expression-") as tmp:
            path = save_npz(tmp / "targets.npz", targets=targets, valid=valid)
            ref = store_asset(path, media_type=ANALYSIS_MEDIA_TYPE, role="target_landmarks", suffix=".npz", parents=[track.tracks, source.analysis])
        return ExpressionResult(targets=ref, method=METHOD, params=params)

    return run_stage(
        "expression",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[track.tracks, source.analysis],
        params=params,
        models=[],
        result_type=ExpressionResult,
        compute=compute,
    )
