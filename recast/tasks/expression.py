"""Expression: per-frame target landmarks of the new face for the whole shot.

SwapAnyHead-style retargeting (``recast.models.retarget``): the source's own expression is
neutralised, the plate's expression is carried over as deltas scaled by the ratio of eye and mouth
sizes, operator edits go on top, and the result is placed in the plate's pose at every frame.
"""

from __future__ import annotations

import numpy as np

from recast.contracts import ExpressionResult, SourceFaceResult, TrackResult
from recast.errors import UsageError
from recast.media.artifacts import ANALYSIS_MEDIA_TYPE, ExpressionTargets, ShotTracks, SourceAnalysis
from recast.models.retarget import MODES, parse_edit, retarget_sequence
from recast.tasks.common import load_artifact, run_stage, scratch_dir, store_asset

METHOD = "expression_aware_retargeting"


def retarget(*, run_id: str | None, shot_id: str | None, track: TrackResult, source: SourceFaceResult, expression: str, edits: list[str]) -> ExpressionResult:
    """Target landmarks: the source's face with the plate's pose and (scaled) expression, plus edits."""
    if expression not in MODES:
        raise UsageError(f"expression mode '{expression}': choose from {', '.join(MODES)}")
    parsed = [parse_edit(e) for e in edits]  # validate before any work
    params = {"method": METHOD, "expression": expression, "edits": list(edits)}
    formats = {"tracks_format": ShotTracks.FORMAT_VERSION, "source_format": SourceAnalysis.FORMAT_VERSION,
               "targets_format": ExpressionTargets.FORMAT_VERSION}

    def compute() -> ExpressionResult:
        plate = load_artifact(track.tracks, ShotTracks).landmarks
        src = load_artifact(source.analysis, SourceAnalysis).landmarks
        targets = retarget_sequence(plate, src, mode=expression, edits=parsed).astype(np.float32)
        valid = ~np.isnan(targets).any(axis=(1, 2))
        with scratch_dir("expression-") as tmp:
            path = ExpressionTargets(targets=targets, valid=valid).save(tmp / "targets.npz")
            ref = store_asset(path, media_type=ANALYSIS_MEDIA_TYPE, role="target_landmarks", suffix=".npz", parents=[track.tracks, source.analysis])
        return ExpressionResult(targets=ref, method=METHOD, params=params)

    return run_stage(
        "expression",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[track.tracks, source.analysis],
        params={**params, **formats},
        models=[],
        result_type=ExpressionResult,
        compute=compute,
    )
