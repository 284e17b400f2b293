"""The face mesh index sets derived from MediaPipe's connection tables: open paths (eyelids, lip
edges, brow strokes) follow the mesh's own edges in the documented order, and reading the tables
does not load MediaPipe itself."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from mediapipe.python.solutions import face_mesh_connections as fmc

from recast.models import mesh_topology as mesh


def undirected(edges) -> set[frozenset[int]]:
    return {frozenset(e) for e in edges}


def assert_path(points, edges, start, end):
    """``start, *points, end`` is a walk along ``edges``."""
    walk = [start, *points, end]
    e = undirected(edges)
    missing = [(a, b) for a, b in zip(walk, walk[1:]) if frozenset((a, b)) not in e]
    assert not missing, missing


@pytest.mark.parametrize("upper, lower, loop, corners, edges", [
    (mesh.RIGHT_UPPER_LID, mesh.RIGHT_LOWER_LID, mesh.RIGHT_EYE, mesh.RIGHT_EYE_CORNERS, fmc.FACEMESH_RIGHT_EYE),
    (mesh.LEFT_UPPER_LID, mesh.LEFT_LOWER_LID, mesh.LEFT_EYE, mesh.LEFT_EYE_CORNERS, fmc.FACEMESH_LEFT_EYE),
    (mesh.LIPS_UPPER_OUTER, mesh.LIPS_LOWER_OUTER, mesh.LIPS_OUTER, mesh.MOUTH_CORNERS, fmc.FACEMESH_LIPS),
    (mesh.LIPS_UPPER_INNER, mesh.LIPS_LOWER_INNER, mesh.LIPS_INNER, mesh.MOUTH_INNER_CORNERS, fmc.FACEMESH_LIPS),
])
def test_the_two_halves_of_a_loop_run_from_the_first_corner_to_the_second(upper, lower, loop, corners, edges):
    first, second = corners
    assert_path(upper, edges, first, second)
    assert_path(lower, edges, first, second)
    assert sorted((*upper, *lower, first, second)) == sorted(loop)
    assert not set(upper) & set(lower)


def test_halves_are_on_the_named_side():
    # MediaPipe's documented midpoints: 159/145 right lids, 386/374 left lids, 0/17 outer lips, 13/14 inner lips
    assert 159 in mesh.RIGHT_UPPER_LID and 145 in mesh.RIGHT_LOWER_LID
    assert 386 in mesh.LEFT_UPPER_LID and 374 in mesh.LEFT_LOWER_LID
    assert 0 in mesh.LIPS_UPPER_OUTER and 17 in mesh.LIPS_LOWER_OUTER
    assert mesh.UPPER_LIP_INNER in mesh.LIPS_UPPER_INNER and mesh.LOWER_LIP_INNER in mesh.LIPS_LOWER_INNER


@pytest.mark.parametrize("lower, upper, points, edges, temple_ends", [
    (mesh.RIGHT_EYEBROW_LOWER, mesh.RIGHT_EYEBROW_UPPER, mesh.RIGHT_EYEBROW, fmc.FACEMESH_RIGHT_EYEBROW, (46, 70)),
    (mesh.LEFT_EYEBROW_LOWER, mesh.LEFT_EYEBROW_UPPER, mesh.LEFT_EYEBROW, fmc.FACEMESH_LEFT_EYEBROW, (276, 300)),
])
def test_each_brow_is_two_strokes_walked_from_the_temple(lower, upper, points, edges, temple_ends):
    assert (lower[0], upper[0]) == temple_ends
    assert_path(lower[1:-1], edges, lower[0], lower[-1])
    assert_path(upper[1:-1], edges, upper[0], upper[-1])
    assert sorted(lower + upper) == sorted(points)


def test_index_sets_load_without_importing_mediapipe():
    # the API validates expression edits through recast.models.retarget; it must stay light
    code = "import sys, recast.models.retarget; print(sorted(m for m in sys.modules if m.split('.')[0] == 'mediapipe'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_mirror_table_pairs_each_landmark_with_its_other_side():
    from recast.models.mesh_topology import FACE_OVAL, MIRROR, NUM_LANDMARKS

    mirror = np.asarray(MIRROR)
    assert len(mirror) == NUM_LANDMARKS and np.array_equal(mirror[mirror], np.arange(NUM_LANDMARKS))  # an involution
    # the eyes' and mouth's corners swap sides, the nose tip, chin and forehead stay
    assert (mirror[33], mirror[133], mirror[61], mirror[468]) == (263, 362, 291, 473)
    assert (mirror[1], mirror[152], mirror[10]) == (1, 152, 10)
    assert set(mirror[list(FACE_OVAL)]) == set(FACE_OVAL)
    # the mesh is symmetric: edges map onto edges (all but a few of the 1322)
    edges = {tuple(sorted(e)) for e in fmc.FACEMESH_TESSELATION}
    kept = sum(tuple(sorted((int(mirror[a]), int(mirror[b])))) in edges for a, b in edges)
    assert kept / len(edges) > 0.99
