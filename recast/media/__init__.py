"""PyAV readers and writers: probing, still images, lossless plate chunks, the render (mp4 or mov).

Frames are (H, W, 3) uint8 RGB numpy arrays; time is rational (pts + time base, Fraction).
Every FFmpeg error is turned into a :mod:`recast.errors` error naming the file and its role.
"""

from recast.media.chunks import (
    LOSSLESS_CODEC,
    LOSSLESS_PIX_FMT,
    LosslessWriter,
    chunk_ranges,
    read_all_frames,
    read_frames,
    read_frames_at,
    read_frames_in_chunks,
    split_plate,
    write_lossless,
)
from recast.media.image import read_image, write_png
from recast.media.probe import IMAGE_SUFFIXES, probe_media, read_timing, sha256_file
from recast.media.render import (
    CONTAINERS,
    Container,
    RenderInfo,
    VideoCodec,
    check_output_not_input,
    check_output_writable,
    choose_video_codec,
    new_file_mode,
    plate_video_codec,
    render_h264,
    render_video,
    resolve_container,
    store_paths,
    supported_containers,
)

__all__ = [
    "CONTAINERS",
    "Container",
    "IMAGE_SUFFIXES",
    "LOSSLESS_CODEC",
    "LOSSLESS_PIX_FMT",
    "LosslessWriter",
    "RenderInfo",
    "VideoCodec",
    "check_output_not_input",
    "check_output_writable",
    "choose_video_codec",
    "chunk_ranges",
    "new_file_mode",
    "plate_video_codec",
    "probe_media",
    "read_all_frames",
    "read_frames",
    "read_frames_at",
    "read_frames_in_chunks",
    "read_image",
    "read_timing",
    "render_h264",
    "render_video",
    "resolve_container",
    "sha256_file",
    "split_plate",
    "store_paths",
    "supported_containers",
    "write_lossless",
    "write_png",
]
