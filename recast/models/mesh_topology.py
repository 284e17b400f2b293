"""Index sets and triangulation of the 478-point MediaPipe face mesh.

Everything here is derived once, at import, from MediaPipe's own connection sets
(``mediapipe.python.solutions.face_mesh_connections``) so that the indices can never drift from
the model that produces the landmarks. Names follow MediaPipe: ``LEFT_*`` is the *subject's*
left, which appears on the right of a non-mirrored image.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
from mediapipe.python.solutions import face_mesh_connections as _fmc

NUM_LANDMARKS = 478
NUM_MESH_POINTS = 468  # the tessellated points; 468..477 are the iris points of refine_landmarks


def _components(edges: frozenset[tuple[int, int]]) -> list[set[int]]:
    adj: dict[int, set[int]] = {}
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    seen: set[int] = set()
    comps = []
    for start in sorted(adj):
        if start in seen:
            continue
        comp, stack = set(), [start]
        while stack:
            v = stack.pop()
            if v in comp:
                continue
            comp.add(v)
            stack.extend(adj[v] - comp)
        seen |= comp
        comps.append(comp)
    return comps


def _cycle(edges: frozenset[tuple[int, int]], start: int) -> tuple[int, ...]:
    """Walk the closed loop through ``start`` formed by ``edges`` (each vertex of degree 2)."""
    adj: dict[int, list[int]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    order = [start]
    prev, cur = start, min(adj[start])
    while cur != start:
        order.append(cur)
        nxt = [v for v in adj[cur] if v != prev]
        if not nxt:
            raise RuntimeError(f"face mesh connection set is not a closed loop at {cur}")
        prev, cur = cur, nxt[0]
    return tuple(order)


def _points(edges: frozenset[tuple[int, int]]) -> tuple[int, ...]:
    return tuple(sorted({i for e in edges for i in e}))


# --- ordered polygons (usable directly with cv2.fillPoly) ------------------------------------
FACE_OVAL: tuple[int, ...] = _cycle(_fmc.FACEMESH_FACE_OVAL, 10)
LEFT_EYE: tuple[int, ...] = _cycle(_fmc.FACEMESH_LEFT_EYE, 362)
RIGHT_EYE: tuple[int, ...] = _cycle(_fmc.FACEMESH_RIGHT_EYE, 33)
_lip_edges = _fmc.FACEMESH_LIPS
_lip_comps = _components(_lip_edges)
LIPS_OUTER: tuple[int, ...] = _cycle(
    frozenset(e for e in _lip_edges if e[0] in next(c for c in _lip_comps if 0 in c)), 61
)
LIPS_INNER: tuple[int, ...] = _cycle(
    frozenset(e for e in _lip_edges if e[0] in next(c for c in _lip_comps if 13 in c)), 78
)

# --- unordered point sets ----------------------------------------------------------------------
LEFT_EYEBROW: tuple[int, ...] = _points(_fmc.FACEMESH_LEFT_EYEBROW)
RIGHT_EYEBROW: tuple[int, ...] = _points(_fmc.FACEMESH_RIGHT_EYEBROW)
NOSE: tuple[int, ...] = _points(_fmc.FACEMESH_NOSE)
RIGHT_IRIS_CENTER = 468
LEFT_IRIS_CENTER = 473
RIGHT_IRIS: tuple[int, ...] = (RIGHT_IRIS_CENTER, *_points(_fmc.FACEMESH_RIGHT_IRIS))
LEFT_IRIS: tuple[int, ...] = (LEFT_IRIS_CENTER, *_points(_fmc.FACEMESH_LEFT_IRIS))

# Eye corners (outer, inner) and mouth corners: the landmarks that define widths.
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (263, 362)
MOUTH_CORNERS = (61, 291)
FOREHEAD_TOP = 10
CHIN_BOTTOM = 152
UPPER_LIP_INNER = 13
LOWER_LIP_INNER = 14


def _tessellation_triangles() -> np.ndarray:
    """Triangles of the face mesh, recovered from its edge list.

    MediaPipe ships the tessellation as edges only. Every triangle of the mesh is a 3-clique
    of that graph, but a few 3-cliques are not faces ("separating triangles" whose three edges
    all belong to two real faces already); those are the cliques whose edges are all used three
    times, and they are dropped.
    """
    edges = _fmc.FACEMESH_TESSELATION
    adj: dict[int, set[int]] = {}
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    tris = set()
    for a, b in edges:
        for c in adj[a] & adj[b]:
            tris.add(tuple(sorted((a, b, c))))
    use = Counter(e for t in tris for e in itertools.combinations(t, 2))
    real = [t for t in tris if not all(use[e] >= 3 for e in itertools.combinations(t, 2))]
    return np.array(sorted(real), dtype=np.int32)


TESSELATION_TRIANGLES: np.ndarray = _tessellation_triangles()
