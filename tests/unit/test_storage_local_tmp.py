"""The local object store cleans up after a writer that was killed mid-write."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from recast.storage.local import LocalStore


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write_into_its_directory(tmp_path):
    store = LocalStore(tmp_path / "objects")
    first = store.put_bytes(b"the same bytes", media_type="application/octet-stream")
    directory = store.fetch(first.uri).parent
    store.delete(first.uri)  # the killed write never completed: the object is not there
    # a process that is gone (it ran and exited) left its temporary file; a live one's stays
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    host = socket.gethostname()
    left = directory / f".tmp-{host}-{dead}-abc123"
    left.write_bytes(b"half an obj")
    live = directory / f".tmp-{host}-{os.getppid()}-def456"
    live.write_bytes(b"being written")
    other_host = directory / f".tmp-another-host-{dead}-ghi789"
    other_host.write_bytes(b"on a shared mount")
    again = store.put_bytes(b"the same bytes", media_type="application/octet-stream")  # the rerun writes it again
    assert store.fetch(again.uri).read_bytes() == b"the same bytes"
    assert not left.exists()
    assert live.exists() and other_host.exists()
    assert not [p for p in directory.iterdir() if p.name.startswith(f".tmp-{host}-{os.getpid()}-")]
