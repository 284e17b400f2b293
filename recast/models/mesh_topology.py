"""Index sets and triangulation of the 478-point MediaPipe face mesh.

Everything here is derived once, at import, from MediaPipe's own connection sets
(``mediapipe.python.solutions.face_mesh_connections``) so that the indices can never drift from
the model that produces the landmarks; every other module takes its landmark indices from here.
Names follow MediaPipe: ``LEFT_*`` is the *subject's* left, which appears on the right of a
non-mirrored image.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import numpy as np


def _face_mesh_connections() -> ModuleType:
    """MediaPipe's ``face_mesh_connections`` module: the mesh's edge sets, plain Python data.

    The file imports nothing, so it is executed on its own when MediaPipe is not loaded yet:
    ``import mediapipe`` costs about a second and 100 MB of native libraries, which callers that
    only need index sets (the API validating an expression edit through
    :mod:`recast.models.retarget`) should not pay.
    """
    name = "mediapipe.python.solutions.face_mesh_connections"
    if name in sys.modules:
        return sys.modules[name]
    pkg = importlib.util.find_spec("mediapipe")  # locates the package without running it
    if pkg is None or not pkg.submodule_search_locations:
        raise ModuleNotFoundError("mediapipe is not installed: the face mesh index sets come from it", name="mediapipe")
    path = Path(next(iter(pkg.submodule_search_locations))) / "python" / "solutions" / "face_mesh_connections.py"
    spec = importlib.util.spec_from_file_location(f"{__name__}._face_mesh_connections", path)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"mediapipe's face mesh connections are missing at {path}", name=name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_fmc = _face_mesh_connections()

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


def _chain(edges: frozenset[tuple[int, int]], start: int) -> tuple[int, ...]:
    """Walk the open path formed by ``edges`` from its end ``start`` to its other end."""
    adj: dict[int, list[int]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    if len(adj[start]) != 1:
        raise RuntimeError(f"face mesh connection path does not end at {start}")
    order = [start]
    prev, cur = None, start
    while True:
        nxt = [v for v in adj[cur] if v != prev]
        if not nxt:
            return tuple(order)
        prev, cur = cur, nxt[0]
        order.append(cur)


def _arc(loop: tuple[int, ...], a: int, b: int, via: int) -> tuple[int, ...]:
    """The vertices of closed ``loop`` strictly between ``a`` and ``b`` on the side holding
    ``via``, ordered from ``a`` to ``b`` (e.g. one eyelid between the eye's corners)."""
    i = loop.index(a)
    rot = loop[i:] + loop[:i]
    k = rot.index(b)
    one, other = rot[1:k], tuple(reversed(rot[k + 1:]))
    if via in one:
        return one
    if via in other:
        return other
    raise RuntimeError(f"landmark {via} is not on the face mesh loop through {a} and {b}")


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
MOUTH_INNER_CORNERS = (LIPS_INNER[0], 308)
FOREHEAD_TOP = 10
CHIN_BOTTOM = 152
UPPER_LIP_INNER = 13
LOWER_LIP_INNER = 14

# --- open paths, ordered from the subject's right (or an eye's outer corner) -------------------
# eyelids between the eye's corners, outer to inner (159/145 and 386/374: the lids' midpoints)
RIGHT_UPPER_LID: tuple[int, ...] = _arc(RIGHT_EYE, RIGHT_EYE_CORNERS[0], RIGHT_EYE_CORNERS[1], via=159)
RIGHT_LOWER_LID: tuple[int, ...] = _arc(RIGHT_EYE, RIGHT_EYE_CORNERS[0], RIGHT_EYE_CORNERS[1], via=145)
LEFT_UPPER_LID: tuple[int, ...] = _arc(LEFT_EYE, LEFT_EYE_CORNERS[0], LEFT_EYE_CORNERS[1], via=386)
LEFT_LOWER_LID: tuple[int, ...] = _arc(LEFT_EYE, LEFT_EYE_CORNERS[0], LEFT_EYE_CORNERS[1], via=374)
# lip edges between the mouth corners, right to left (MediaPipe's lipsUpperOuter etc.)
LIPS_UPPER_OUTER: tuple[int, ...] = _arc(LIPS_OUTER, MOUTH_CORNERS[0], MOUTH_CORNERS[1], via=0)
LIPS_LOWER_OUTER: tuple[int, ...] = _arc(LIPS_OUTER, MOUTH_CORNERS[0], MOUTH_CORNERS[1], via=17)
LIPS_UPPER_INNER: tuple[int, ...] = _arc(LIPS_INNER, MOUTH_INNER_CORNERS[0], MOUTH_INNER_CORNERS[1], via=UPPER_LIP_INNER)
LIPS_LOWER_INNER: tuple[int, ...] = _arc(LIPS_INNER, MOUTH_INNER_CORNERS[0], MOUTH_INNER_CORNERS[1], via=LOWER_LIP_INNER)


def _brow_strokes(edges: frozenset[tuple[int, int]], lower_end: int, upper_end: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """An eyebrow's two strokes in the mesh (lower edge, upper edge), each walked from its
    end at the temple."""
    comps = _components(edges)
    lower = next(c for c in comps if lower_end in c)
    upper = next(c for c in comps if upper_end in c)
    return (_chain(frozenset(e for e in edges if e[0] in lower), lower_end),
            _chain(frozenset(e for e in edges if e[0] in upper), upper_end))


RIGHT_EYEBROW_LOWER, RIGHT_EYEBROW_UPPER = _brow_strokes(_fmc.FACEMESH_RIGHT_EYEBROW, 46, 70)
LEFT_EYEBROW_LOWER, LEFT_EYEBROW_UPPER = _brow_strokes(_fmc.FACEMESH_LEFT_EYEBROW, 276, 300)


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

#: ``MIRROR[i]``: the landmark on the other side of the face from landmark ``i`` (the midline's
#: 28 points are their own). The mesh comes from a symmetric canonical face, but MediaPipe ships
#: no table of its pairs, so this one was measured: on the 17 near-frontal photos (|yaw| ≤ 6°)
#: of the shared media set, each face's 478 3-D landmarks were reflected (x → -x), aligned back
#: onto themselves by a similarity and matched one-to-one (Hungarian assignment, 4 rounds); the
#: table is the per-point majority (the least agreed point: 14 of 17 photos, mean 92%). It is an
#: involution and maps 99.5% of the tessellation's edges onto edges (tests/unit/test_mesh_topology.py).
MIRROR: tuple[int, ...] = (
    0, 1, 2, 248, 4, 5, 6, 249, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 250, 251, 252, 253, 254, 255, 256,
    257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271, 272, 273, 274, 275, 276, 277, 278,
    279, 280, 281, 282, 283, 284, 285, 286, 287, 288, 289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300,
    301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321, 322,
    323, 94, 324, 325, 326, 327, 328, 329, 330, 331, 332, 333, 334, 335, 336, 337, 338, 339, 340, 341, 342, 343,
    344, 345, 346, 347, 348, 349, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 360, 361, 362, 363, 364, 365,
    366, 367, 368, 369, 370, 371, 372, 373, 374, 375, 376, 377, 378, 379, 151, 152, 380, 381, 382, 383, 384, 385,
    386, 387, 388, 389, 390, 164, 391, 392, 393, 168, 394, 395, 396, 397, 398, 399, 175, 400, 401, 402, 403, 404,
    405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 195, 419, 197, 420, 199, 200, 421, 422,
    423, 424, 425, 426, 427, 428, 429, 430, 431, 432, 433, 434, 435, 436, 437, 438, 439, 440, 441, 442, 443, 444,
    445, 446, 447, 448, 449, 450, 451, 452, 453, 454, 455, 456, 457, 458, 459, 460, 461, 462, 463, 464, 465, 466,
    467, 3, 7, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44,
    45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72,
    73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 95, 96, 97, 98, 99, 100,
    101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122,
    123, 124, 125, 126, 127, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144,
    145, 146, 147, 148, 149, 150, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 165, 166, 167, 169, 170,
    171, 172, 173, 174, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193,
    194, 196, 198, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219,
    220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241,
    242, 243, 244, 245, 246, 247, 473, 476, 475, 474, 477, 468, 471, 470, 469, 472,
)
