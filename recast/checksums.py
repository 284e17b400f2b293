"""The one sha256 of a file that recast records everywhere (assets, model weights, media).

It lives outside ``storage`` and ``media`` so that ``models`` (which must not know about object
stores) can checksum its weight files with the same function the stores use for content keys.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# 8 MiB: large enough that multi-GB weights and plates hash at disk speed, small enough that no
# file ever sits in memory whole
BLOCK_SIZE = 8 * 1024 * 1024


def sha256_file(path: Path | str) -> str:
    """The lower-case hex sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK_SIZE):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["sha256_file"]
