"""Expression: per-frame target landmarks of the new face for the whole shot."""

from __future__ import annotations

import numpy as np

from recast.contracts import ExpressionResult, SegmentResult, SourceFaceResult
from recast.models.expression import blend_identity_shape
from recast.tasks.arrays import save_npz
from recast.tasks.common import run_stage, scratch_dir, store_asset
from recast.tasks.segment import ANALYSIS_MEDIA_TYPE, load_analysis

METHOD = "similarity_aligned_shape_blend"


def plate_landmarks(segments: list[SegmentResult]) -> np.ndarray:
    """The plate's landmarks for the whole shot (F,478,3), NaN where no face was found."""
    return np.concatenate([load_analysis(s.analysis)["landmarks"] for s in segments], axis=0)


def retarget(*, run_id: str | None, shot_id: str | None, segments: list[SegmentResult], source: SourceFaceResult, strength: float) -> ExpressionResult:
    """Target landmarks: the plate's pose and expression with the source's face proportions."""
    params = {"method": METHOD, "identity_strength": strength}

    def compute() -> ExpressionResult:
        plate = plate_landmarks(segments)
        src = load_analysis(source.analysis)["landmarks"]
        targets = blend_identity_shape(plate, src, strength=strength).astype(np.float32)
        valid = ~np.isnan(targets).any(axis=(1, 2))
        with scratch_dir("expression-") as tmp:
            path = save_npz(tmp / "targets.npz", targets=targets, valid=valid)
            ref = store_asset(path, media_type=ANALYSIS_MEDIA_TYPE, role="target_landmarks", suffix=".npz", parents=[s.analysis for s in segments] + [source.analysis])
        return ExpressionResult(targets=ref, method=METHOD, params=params)

    return run_stage(
        "expression",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[s.analysis for s in segments] + [source.analysis],
        params=params,
        models=[],
        result_type=ExpressionResult,
        compute=compute,
    )
