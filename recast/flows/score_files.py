"""QC of any plate/output pair of files (``recast qc --plate --output --source``).

Orchestration only: both files go through the ingest and segment stages, the plate through track
and its source photo through segment's source analysis (the same stage functions as a swap, so
their work is cached too), then :func:`recast.tasks.qc.score_pair` measures the pair. Run in
process, without a Prefect flow run: a supervisor checking a file made by another tool waits for
the answer at the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recast.contracts import IngestResult, Mode, QCReport, SourceFaceResult
from recast.errors import InputError, UsageError
from recast.settings import get_settings
from recast.tasks.ingest import ingest
from recast.tasks.qc import score_pair
from recast.tasks.segment import analyze_source, segment_chunk
from recast.tasks.track import track_person


@dataclass(frozen=True)
class FilesQC:
    """What :func:`score_files` measured, with the records the report stage needs."""

    qc: QCReport
    plate: IngestResult
    output: IngestResult
    source: SourceFaceResult


def score_files(*, plate: str, output: str, source: str, mode: str = "face", face: str = "largest", project: str | None = None,
                chunk_size: int | None = None, source_face: str | None = None) -> FilesQC:
    """QC of any swap: ``output`` (made by recast or another tool) against its ``plate`` and the
    ``source`` photo, with the same metrics and thresholds as the ``qc`` stage of a swap.

    The files must match frame for frame (same size, same frame count): checked right after
    ingest, before any costly stage runs. ``source_face`` (``index:N``) picks the face of a
    source photo showing several people, as ``recast swap --source-face`` does.
    """
    if mode not in (Mode.face.value, Mode.head.value):
        raise UsageError(f"--mode '{mode}': choose from face, head")
    size = chunk_size or get_settings().chunk_size
    ing_p = ingest(run_id=None, shot_id=None, plate=plate, sources=[source], chunk_size=size)
    try:
        ing_o = ingest(run_id=None, shot_id=None, plate=output, sources=[source], chunk_size=size)
    except InputError as exc:
        raise _as_output_error(exc, output) from None
    pi, oi = ing_p.plate_info, ing_o.plate_info
    if (pi.width, pi.height) != (oi.width, oi.height):
        raise InputError(f"output '{output}' is {oi.width}x{oi.height}, its plate '{plate}' {pi.width}x{pi.height}: QC compares them frame by frame")
    if pi.frame_count != oi.frame_count:
        raise InputError(f"output '{output}' has {oi.frame_count} frames, its plate '{plate}' {pi.frame_count}")
    total = pi.frame_count
    seg_p = [segment_chunk(run_id=None, shot_id=None, chunk=c, chunk_index=i, face_selector=face, total_frames=total) for i, c in enumerate(ing_p.chunks)]
    seg_o = [segment_chunk(run_id=None, shot_id=None, chunk=c, chunk_index=i, face_selector=face, total_frames=total) for i, c in enumerate(ing_o.chunks)]
    track = track_person(run_id=None, shot_id=None, ingest=ing_p, segments=seg_p, face_selector=face)
    src = analyze_source(run_id=None, shot_id=None, source=ing_p.sources[0], name=Path(source).name, mode=mode, source_face=source_face,
                         plate=ing_p.plate, face_selector=face, refuse=False)  # scoring files never refuses: the findings are recorded
    qc = score_pair(plate=ing_p, output=ing_o, plate_segments=seg_p, output_segments=seg_o, track=track, source=src, mode=mode, project=project)
    return FilesQC(qc=qc, plate=ing_p, output=ing_o, source=src)


def _as_output_error(exc: InputError, output: str) -> InputError:
    """The same error, naming the file as the ``--output`` it is: ingest reads every video it
    is given as a plate and says "plate '...'", which would send the user to the wrong file."""
    text = str(exc)
    if text.startswith("plate "):
        text = "--output " + text[len("plate "):]
    elif output not in text:
        text = f"--output '{output}': {text}"
    try:
        new = type(exc)(text)
    except TypeError:  # a subclass with a constructor of its own
        new = InputError(text)
    new.__cause__ = exc.__cause__
    return new
