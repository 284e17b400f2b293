"""Sample inputs for ``recast demo``, built from public-domain images inside installed packages.

The source is scikit-image's astronaut portrait (Eileen Collins, NASA, public domain); the plate is
rendered from matplotlib's ``grace_hopper.jpg`` (US Navy, public domain) with a virtual camera
move, so the repository itself ships no footage.
"""

from __future__ import annotations

from pathlib import Path

from recast.errors import InputNotFoundError


def astronaut_photo() -> Path:
    import skimage.data

    path = Path(skimage.data.__file__).parent / "astronaut.png"
    if not path.exists():
        raise InputNotFoundError(f"demo source '{path}': scikit-image's astronaut.png is missing from the installed package")
    return path


def grace_hopper_photo() -> Path:
    import matplotlib.cbook

    path = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    if not path.exists():
        raise InputNotFoundError(f"demo plate still '{path}': matplotlib's sample_data/grace_hopper.jpg is missing")
    return path


def demo_inputs(workdir: Path, *, source: Path | None = None, plate: Path | None = None) -> tuple[Path, Path, str]:
    """(source photo, plate clip, note for the user); builds the synthetic plate once."""
    notes = []
    if source is None:
        source = astronaut_photo()
        notes.append(f"source: {source.name} (NASA portrait of Eileen Collins, public domain, from scikit-image)")
    if plate is None:
        plate = workdir / "synthetic_plate_grace_hopper.mp4"
        if not plate.exists():
            from recast.media import read_image
            from recast.media.synthetic import camera_move_frames, write_h264

            frames = camera_move_frames(read_image(grace_hopper_photo(), role="demo still"), size=512, frames=75)
            write_h264(frames, plate)
        notes.append(f"plate: {plate} is SYNTHETIC: a virtual camera move over matplotlib's grace_hopper.jpg (US Navy, public domain)")
    return source, plate, "\n".join(notes)
