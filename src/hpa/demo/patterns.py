"""Drawing synthetic HPA-like cells: the scene (cells, nuclei, reference stains) and 28 green patterns.

A :class:`Scene` is laid out once per image; the red (microtubules), blue (nucleus) and yellow (ER)
reference stains come from it, and each label adds its own green pattern (``PATTERNS[class]``) in a
subset of the cells. Geometry is in pixels scaled by ``scene.s = size / 128`` so an image looks the
same at any size. Everything is drawn on float32 canvases in [0, ~1] with OpenCV primitives.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

Pattern = Callable[["Scene", list, np.ndarray], None]
PATTERNS: dict[int, Pattern] = {}


def pattern(cls: int) -> Callable[[Pattern], Pattern]:
    """Decorator filing a green-pattern drawer ``fn(scene, cells, layer)`` under class ``cls``."""
    def deco(fn: Pattern) -> Pattern:
        if cls in PATTERNS:
            raise ValueError(f"pattern for class {cls} registered twice")
        PATTERNS[cls] = fn
        return fn
    return deco


@dataclass
class Cell:
    """One cell: outline and nucleus polygons (int32 Kx2), centre, mean radii, nucleoli, kind."""
    idx: int
    cx: float
    cy: float
    r: float
    poly: np.ndarray
    ncx: float
    ncy: float
    na: float
    nb: float
    nangle: float
    npoly: np.ndarray
    kind: str = "normal"  # "normal", "daughter" (cytokinesis pair) or "mitotic"
    nucleoli: list = field(default_factory=list)
    tips: np.ndarray | None = None  # filament end points (x, y), filled by the red stain


@dataclass
class Scene:
    """The layout of one image plus the maps the patterns need."""
    size: int
    s: float
    rng: np.random.Generator
    cells: list
    cell_map: np.ndarray = None  # int32, 0 = background, i + 1 = cell i
    nuc_map: np.ndarray = None   # int32, same ids, nucleus only
    nuc_dist: np.ndarray = None  # float32 distance (px) to the nearest nucleus
    er: np.ndarray = None        # float32 reticular texture (the yellow pattern)
    filaments: list = field(default_factory=list)
    bridges: list = field(default_factory=list)  # (p, q) end points of cytokinetic bridges


def blob_polygon(rng, cx, cy, a, b, angle, irregular, k=40) -> np.ndarray:
    """Return an irregular ellipse outline (k x 2 int32): radius modulated by low harmonics."""
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    h = np.arange(2, 5)[:, None]
    amp = rng.normal(0, irregular, (3, 1)) / h
    rad = 1 + (amp * np.cos(h * t + rng.uniform(0, 2 * np.pi, (3, 1)))).sum(0)
    x, y = a * np.cos(t) * rad, b * np.sin(t) * rad
    ca, sa = np.cos(angle), np.sin(angle)
    return np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], 1).round().astype(np.int32)


def smooth_noise(rng, size, sigma) -> np.ndarray:
    """Gaussian-blurred white noise rescaled to zero mean, unit std (float32 size x size)."""
    n = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), max(sigma, 0.3))
    return (n - n.mean()) / (n.std() + 1e-6)


def _make_cell(rng, idx, cx, cy, r, kind) -> Cell:
    round_ = kind != "normal"
    ecc = 1.0 if round_ else rng.uniform(0.55, 1.0)
    angle = rng.uniform(0, np.pi)
    poly = blob_polygon(rng, cx, cy, r, r * ecc, angle, 0.04 if round_ else 0.2)
    nr = r * rng.uniform(0.42, 0.55)
    off = 0.0 if round_ else rng.uniform(0, 0.15) * r
    oa = rng.uniform(0, 2 * np.pi)
    ncx, ncy = cx + off * np.cos(oa), cy + off * np.sin(oa)
    na, nb = nr, nr * (1.0 if round_ else rng.uniform(0.75, 1.0))
    if kind == "mitotic":  # condensed chromosomes: a thin metaphase plate
        na, nb = nr * 0.9, nr * 0.28
    nangle = rng.uniform(0, np.pi)
    npoly = blob_polygon(rng, ncx, ncy, na, nb, nangle, 0.03 if round_ else 0.07, k=32)
    cell = Cell(idx, cx, cy, r, poly, ncx, ncy, na, nb, nangle, npoly, kind)
    if kind != "mitotic":
        for _ in range(rng.integers(2, 5)):
            p = _ellipse_points(rng, cell, 1, 0.55)[0]
            cell.nucleoli.append((p[0], p[1], max(1.0, nr * rng.uniform(0.18, 0.26))))
    return cell


def _ellipse_points(rng, cell, n, frac) -> np.ndarray:
    """Return n random (x, y) points inside ``frac`` of the nucleus ellipse of ``cell``."""
    rad = np.sqrt(rng.uniform(0, 1, n)) * frac
    t = rng.uniform(0, 2 * np.pi, n)
    x, y = cell.na * rad * np.cos(t), cell.nb * rad * np.sin(t)
    ca, sa = np.cos(cell.nangle), np.sin(cell.nangle)
    return np.stack([cell.ncx + ca * x - sa * y, cell.ncy + sa * x + ca * y], 1)


def layout(rng, size, labels) -> Scene:
    """Place 3-8 irregular cells (plus a dividing pair for label 16, a mitotic cell for 17)."""
    s = size / 128
    cells: list[Cell] = []
    centres: list[tuple[float, float, float]] = []

    def place(r, gap, force=False):
        # best of 16 candidates (Mitchell's sampling) spreads cells evenly over the field
        cand = rng.uniform(0.12 if force else 0.0, 0.88 if force else 1.0, (16, 2)) * size
        if not centres:
            return cand[0]
        c = np.array(centres)
        dist = np.hypot(cand[:, None, 0] - c[:, 0], cand[:, None, 1] - c[:, 1])
        clear = (dist - gap * (r + c[:, 2])).min(1)
        best = int(clear.argmax())
        return cand[best] if clear[best] > 0 or force else None  # a labelled kind must appear

    # Rare kinds are also drawn without their label so the blue/red stains alone cannot give it away.
    if 16 in labels or rng.random() < 0.15:
        r = rng.uniform(10, 13) * s
        p = place(2.2 * r, 0.8, force=16 in labels)
        if p is not None:
            a = rng.uniform(0, np.pi)
            d = r * rng.uniform(1.35, 1.6)
            pts = [(p[0] + d * np.cos(a), p[1] + d * np.sin(a)), (p[0] - d * np.cos(a), p[1] - d * np.sin(a))]
            for q in pts:
                cells.append(_make_cell(rng, len(cells), q[0], q[1], r, "daughter"))
            centres.append((p[0], p[1], 2.2 * r))
    if 17 in labels or rng.random() < 0.15:
        r = rng.uniform(13, 17) * s
        p = place(r, 0.85, force=17 in labels)
        if p is not None:
            cells.append(_make_cell(rng, len(cells), p[0], p[1], r, "mitotic"))
            centres.append((p[0], p[1], r))
    dense = 22 in labels  # cell junctions need cells that touch
    for _ in range(rng.integers(4, 10)):
        r = rng.uniform(18, 30) * s
        p = place(r, 0.7 if dense else rng.uniform(0.75, 1.0))
        if p is not None:
            cells.append(_make_cell(rng, len(cells), p[0], p[1], r, "normal"))
            centres.append((p[0], p[1], r))
    if not cells:  # always at least one cell in view
        cells.append(_make_cell(rng, 0, size / 2, size / 2, 20 * s, "normal"))
    return _rasterise(Scene(size, s, rng, cells))


def _rasterise(sc: Scene) -> Scene:
    cm = np.zeros((sc.size, sc.size), np.int32)
    nm = np.zeros_like(cm)
    for c in sc.cells:
        cv2.fillPoly(cm, [c.poly], c.idx + 1)
    for c in sc.cells:
        cv2.fillPoly(nm, [c.npoly], c.idx + 1)
        cv2.fillPoly(cm, [c.npoly], c.idx + 1)  # a nucleus always lies in its own cell
    sc.cell_map, sc.nuc_map = cm, nm
    sc.nuc_dist = cv2.distanceTransform((nm == 0).astype(np.uint8), cv2.DIST_L2, 3)
    # dividing daughters (placed in pairs) are joined by a bridge through their contact point
    daughters = [c for c in sc.cells if c.kind == "daughter"]
    for a, b in zip(daughters[0::2], daughters[1::2]):
        sc.bridges.append(((a.ncx, a.ncy), (b.ncx, b.ncy), a.na, b.na))
    return sc


def cyto_points(sc: Scene, cell: Cell, n: int, lo=0.0, hi=1.0) -> np.ndarray:
    """Return up to n (x, y) points in ``cell``'s cytoplasm between fractions lo-hi of nucleus->edge."""
    t = sc.rng.uniform(0, 2 * np.pi, 3 * n)
    f = sc.rng.uniform(lo, hi, 3 * n)
    nr = (cell.na + cell.nb) / 2
    d = nr * 1.1 + f * (cell.r * 0.92 - nr * 1.1)
    x, y = cell.ncx + d * np.cos(t), cell.ncy + d * np.sin(t)
    xi, yi = np.clip(x.round().astype(int), 0, sc.size - 1), np.clip(y.round().astype(int), 0, sc.size - 1)
    ok = (sc.cell_map[yi, xi] == cell.idx + 1) & (sc.nuc_map[yi, xi] == 0)
    ok &= (x >= 0) & (x < sc.size) & (y >= 0) & (y < sc.size)
    return np.stack([x[ok], y[ok]], 1)[:n]


def splat(layer: np.ndarray, pts: np.ndarray, sigma: float, value: float = 1.0) -> None:
    """Add Gaussian dots of std ``sigma`` at ``pts`` (peak about ``value``) to ``layer`` in place."""
    if len(pts) == 0:
        return
    h, w = layer.shape
    acc = np.zeros_like(layer)
    xi, yi = pts[:, 0].round().astype(int), pts[:, 1].round().astype(int)
    ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    np.add.at(acc, (yi[ok], xi[ok]), 1.0)
    sigma = max(sigma, 0.4)
    layer += cv2.GaussianBlur(acc, (0, 0), sigma) * (2 * np.pi * sigma ** 2) * value


def mask_of(sc: Scene, cells, nucleus: bool | None) -> np.ndarray:
    """Boolean mask of the given cells: whole cell (None), nucleus only (True), cytoplasm (False)."""
    ids = np.array([c.idx + 1 for c in cells])
    if nucleus is True:
        return np.isin(sc.nuc_map, ids)
    m = np.isin(sc.cell_map, ids)
    return m & (sc.nuc_map == 0) if nucleus is False else m


def _pt(p) -> tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))


# ---------------------------------------------------------------- reference stains (red, blue, yellow)

def draw_red(sc: Scene) -> np.ndarray:
    """Microtubules: curvy filaments from each nucleus out to the cell edge (mitotic: a spindle)."""
    img = np.zeros((sc.size, sc.size), np.float32)
    rng = sc.rng
    for c in sc.cells:
        if c.kind == "mitotic":
            sc.filaments.append(spindle_lines(c))
            cv2.polylines(img, sc.filaments[-1], False, 1.0, max(1, round(sc.s)))
            continue
        n = int(rng.integers(20, 32) * c.r / (20 * sc.s))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        steps = np.linspace(0, 1, 6)[:, None]
        nr = (c.na + c.nb) / 2
        bend = np.cumsum(rng.normal(0, 0.07, (6, n)), 0)
        rad = nr * 0.95 + steps * (c.r * rng.uniform(0.8, 1.0, n) - nr * 0.95)
        x = c.ncx + rad * np.cos(t + bend)
        y = c.ncy + rad * np.sin(t + bend)
        lines = list(np.ascontiguousarray(np.stack([x.T, y.T], -1).round(), np.int32))  # n x 6 points
        c.tips = np.stack([x[-1], y[-1]], 1)
        sc.filaments.append(lines)
        cv2.polylines(img, lines, False, 1.0, 1)
    img *= mask_of(sc, sc.cells, None)
    img = cv2.GaussianBlur(img, (0, 0), 0.5 * sc.s + 0.2)
    cyto = mask_of(sc, sc.cells, False).astype(np.float32)
    return 0.9 * img + 0.12 * cv2.GaussianBlur(cyto, (0, 0), sc.s)


def spindle_lines(c: Cell) -> list:
    """Bipolar fan: lines from two poles (on the long axis of the cell) to the metaphase plate."""
    ca, sa = np.cos(c.nangle + np.pi / 2), np.sin(c.nangle + np.pi / 2)
    d = c.r * 0.7
    poles = [(c.ncx + d * ca, c.ncy + d * sa), (c.ncx - d * ca, c.ncy - d * sa)]
    u = np.linspace(-1, 1, 7) * c.na
    plate = np.stack([c.ncx + u * np.cos(c.nangle), c.ncy + u * np.sin(c.nangle)], 1)
    return [np.array([p, q]).round().astype(np.int32) for p in poles for q in plate]


def draw_blue(sc: Scene) -> np.ndarray:
    """Nuclei: textured fill, darker nucleoli, bright condensed chromosomes in mitotic cells."""
    tex = 0.8 + 0.12 * smooth_noise(sc.rng, sc.size, 1.2 * sc.s)
    img = (sc.nuc_map > 0) * tex
    dark = np.zeros_like(img)
    for c in sc.cells:
        for x, y, r in c.nucleoli:
            cv2.circle(dark, _pt((x, y)), max(1, round(r)), 0.2, -1)
        if c.kind == "mitotic":
            img[sc.nuc_map == c.idx + 1] = 1.0
    img = img - dark * (sc.nuc_map > 0)
    return cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.6 * sc.s)


def draw_yellow(sc: Scene) -> np.ndarray:
    """ER: a reticular network in the cytoplasm, denser near the nucleus. Stored as ``sc.er``."""
    n = smooth_noise(sc.rng, sc.size, 0.8 * sc.s)
    net = np.exp(-(n / 0.35) ** 2)  # zero crossings of smooth noise look like a mesh
    near = np.exp(-sc.nuc_dist / (9 * sc.s))
    sc.er = (net * (0.25 + 0.75 * near) * mask_of(sc, sc.cells, False)).astype(np.float32)
    return 1.2 * cv2.GaussianBlur(sc.er, (0, 0), 0.4 * sc.s)


# ---------------------------------------------------------------- the 28 green patterns
# Each drawer adds its pattern (values about 0-1, sharp; the caller blurs) to ``layer`` in place,
# in the given cells only (16 and 17 use the dividing/mitotic cells the layout placed for them).

def _nucleolus_mask(sc: Scene, cells, grow: float = 0.0) -> np.ndarray:
    m = np.zeros((sc.size, sc.size), np.float32)
    for c in cells:
        for x, y, r in c.nucleoli:
            cv2.circle(m, _pt((x, y)), max(1, round(r + grow)), 1.0, -1)
    return m


@pattern(0)
def nucleoplasm(sc, cells, layer):
    """Class 0: nucleoplasm fill (nucleus minus nucleoli)."""
    fill = mask_of(sc, cells, True) * (0.75 + 0.12 * smooth_noise(sc.rng, sc.size, sc.s))
    layer += fill * (1 - _nucleolus_mask(sc, cells, 0.5 * sc.s))


@pattern(1)
def nuclear_membrane(sc, cells, layer):
    """Class 1: nuclear rim."""
    cv2.polylines(layer, [c.npoly for c in cells], True, 2.0, max(1, round(sc.s)))


@pattern(2)
def nucleoli(sc, cells, layer):
    """Class 2: 2-4 bright nucleoli blobs."""
    layer += _nucleolus_mask(sc, cells)


@pattern(3)
def fibrillar_center(sc, cells, layer):
    """Class 3: tiny dots inside the nucleoli."""
    for c in cells:
        for x, y, r in c.nucleoli:
            k = int(sc.rng.integers(2, 5))
            a, d = sc.rng.uniform(0, 2 * np.pi, k), sc.rng.uniform(0.2, 0.9, k) * r
            splat(layer, np.stack([x + d * np.cos(a), y + d * np.sin(a)], 1), 0.45 * sc.s, 2.0)


@pattern(4)
def nuclear_speckles(sc, cells, layer):
    """Class 4: 10-20 irregular speckles in the nucleus."""
    for c in cells:
        for x, y in _ellipse_points(sc.rng, c, int(sc.rng.integers(10, 21)), 0.85):
            ax = tuple(max(1, round(v)) for v in sc.rng.uniform(0.6, 1.6, 2) * sc.s)
            cv2.ellipse(layer, _pt((x, y)), ax, sc.rng.uniform(0, 180), 0, 360, 0.9, -1)
    layer += 0.12 * mask_of(sc, cells, True)


@pattern(5)
def nuclear_bodies(sc, cells, layer):
    """Class 5: 1-4 round dots in the nucleus."""
    for c in cells:
        splat(layer, _ellipse_points(sc.rng, c, int(sc.rng.integers(1, 5)), 0.8), 0.8 * sc.s, 1.4)


@pattern(6)
def endoplasmic_reticulum(sc, cells, layer):
    """Class 6: reticular network like the yellow ER stain."""
    layer += 1.6 * sc.er * mask_of(sc, cells, False)


@pattern(7)
def golgi(sc, cells, layer):
    """Class 7: a cap beside the nucleus on one side."""
    for c in cells:
        start = sc.rng.uniform(0, 360)
        ax = (round(c.na + 1.5 * sc.s), round(c.nb + 1.5 * sc.s))
        cv2.ellipse(layer, _pt((c.ncx, c.ncy)), ax, np.degrees(c.nangle), start,
                    start + sc.rng.uniform(60, 110), 1.0, max(2, round(2.5 * sc.s)))


@pattern(8)
def peroxisomes(sc, cells, layer):
    """Class 8: many small dots across the cytoplasm."""
    for c in cells:
        splat(layer, cyto_points(sc, c, int(sc.rng.integers(25, 45))), 0.45 * sc.s, 2.0)


@pattern(9)
def endosomes(sc, cells, layer):
    """Class 9: medium vesicles across the cytoplasm."""
    for c in cells:
        for p in cyto_points(sc, c, int(sc.rng.integers(8, 16))):
            cv2.circle(layer, _pt(p), max(1, round(sc.rng.uniform(1.2, 1.9) * sc.s)), 0.8, -1)


@pattern(10)
def lysosomes(sc, cells, layer):
    """Class 10: perinuclear vesicles."""
    for c in cells:
        for p in cyto_points(sc, c, int(sc.rng.integers(6, 13)), 0.0, 0.3):
            cv2.circle(layer, _pt(p), max(1, round(sc.rng.uniform(1.0, 1.5) * sc.s)), 1.2, -1)


@pattern(11)
def intermediate_filaments(sc, cells, layer):
    """Class 11: wavy concentric cage around the nucleus."""
    tmp = np.zeros_like(layer)
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    for c in cells:
        nr = (c.na + c.nb) / 2
        for rad in np.linspace(nr * 1.3, c.r * 0.85, int(sc.rng.integers(3, 6))):
            k, ph = sc.rng.integers(5, 10), sc.rng.uniform(0, 2 * np.pi)
            rr = rad * (1 + 0.12 * np.sin(k * t + ph))
            ring = np.stack([c.ncx + rr * np.cos(t), c.ncy + rr * np.sin(t)], 1).round().astype(np.int32)
            cv2.polylines(tmp, [ring], True, 1.0, 1)
    layer += 1.5 * tmp * mask_of(sc, cells, None)


@pattern(12)
def actin(sc, cells, layer):
    """Class 12: straight parallel stress fibres."""
    for c in cells:
        tmp = np.zeros_like(layer)
        th = sc.rng.uniform(0, np.pi)
        d, n = np.array([np.cos(th), np.sin(th)]), np.array([-np.sin(th), np.cos(th)])
        for off in np.arange(-c.r, c.r, sc.rng.uniform(2.5, 4) * sc.s):
            p = np.array([c.cx, c.cy]) + off * n
            cv2.line(tmp, _pt(p - c.r * d), _pt(p + c.r * d), 1.0, 1)
        layer += 1.3 * tmp * mask_of(sc, [c], None)


@pattern(13)
def focal_adhesions(sc, cells, layer):
    """Class 13: short radial dashes at the cell edge."""
    for c in cells:
        idx = sc.rng.choice(len(c.poly), int(sc.rng.integers(8, 15)), replace=False)
        ctr = np.array([c.cx, c.cy])
        for v in c.poly[idx]:
            cv2.line(layer, _pt(ctr + 0.8 * (v - ctr)), _pt(ctr + 0.98 * (v - ctr)), 2.5, 1)


@pattern(14)
def microtubules(sc, cells, layer):
    """Class 14: the red microtubule filaments."""
    for c in cells:
        cv2.polylines(layer, sc.filaments[c.idx], False, 1.5, 1)


@pattern(15)
def microtubule_ends(sc, cells, layer):
    """Class 15: dots at the filament tips."""
    for c in cells:
        if c.tips is not None:
            splat(layer, c.tips, 0.55 * sc.s, 2.5)


@pattern(16)
def cytokinetic_bridge(sc, cells, layer):
    """Class 16: thin bright line (with midbody) between two daughter cells."""
    for p, q, ra, rb in sc.bridges:
        p, q = np.array(p), np.array(q)
        u = (q - p) / (np.linalg.norm(q - p) + 1e-6)
        cv2.line(layer, _pt(p + ra * 1.2 * u), _pt(q - rb * 1.2 * u), 1.2, 1)
        splat(layer, ((p + q) / 2)[None], 0.7 * sc.s, 1.5)  # the midbody


@pattern(17)
def mitotic_spindle(sc, cells, layer):
    """Class 17: bipolar fan in the rounded mitotic cell."""
    for c in sc.cells:
        if c.kind == "mitotic":
            cv2.polylines(layer, sc.filaments[c.idx], False, 1.5, 1)


def _beside_nucleus(sc, c, gap):
    a = sc.rng.uniform(0, 2 * np.pi)
    d = (c.na + c.nb) / 2 + gap * sc.s
    return np.array([c.ncx + d * np.cos(a), c.ncy + d * np.sin(a)]), a


@pattern(18)
def mtoc(sc, cells, layer):
    """Class 18: one bright dot next to the nucleus."""
    splat(layer, np.array([_beside_nucleus(sc, c, 2.5)[0] for c in cells]), 0.9 * sc.s, 3.0)


@pattern(19)
def centrosome(sc, cells, layer):
    """Class 19: two close dots next to the nucleus."""
    for c in cells:
        p, a = _beside_nucleus(sc, c, 2.5)
        off = 1.1 * sc.s * np.array([-np.sin(a), np.cos(a)])
        splat(layer, np.stack([p - off, p + off]), 0.55 * sc.s, 2.5)


@pattern(20)
def lipid_droplets(sc, cells, layer):
    """Class 20: ring-shaped vesicles."""
    for c in cells:
        for p in cyto_points(sc, c, int(sc.rng.integers(3, 9))):
            cv2.circle(layer, _pt(p), max(1, round(sc.rng.uniform(1.6, 2.6) * sc.s)), 1.8, 1)


@pattern(21)
def plasma_membrane(sc, cells, layer):
    """Class 21: cell outline."""
    cv2.polylines(layer, [c.poly for c in cells], True, 1.8, max(1, round(sc.s)))


@pattern(22)
def cell_junctions(sc, cells, layer):
    """Class 22: bright segments where cells touch."""
    cm, ids = sc.cell_map, [c.idx + 1 for c in cells]
    edge = np.zeros(cm.shape, bool)
    for dy, dx in ((0, 1), (1, 0)):
        a, b = cm[: cm.shape[0] - dy, : cm.shape[1] - dx], cm[dy:, dx:]
        touch = (a != b) & (a > 0) & (b > 0) & (np.isin(a, ids) | np.isin(b, ids))
        edge[: cm.shape[0] - dy, : cm.shape[1] - dx] |= touch
    if edge.sum() < 3:  # no cells touch: light the outline facing the nearest neighbour instead
        for c in cells:
            others = [o for o in sc.cells if o is not c]
            if not others:
                continue
            o = min(others, key=lambda o: np.hypot(o.cx - c.cx, o.cy - c.cy))
            u = np.array([o.cx - c.cx, o.cy - c.cy]) / (np.hypot(o.cx - c.cx, o.cy - c.cy) + 1e-6)
            v = c.poly - np.array([c.cx, c.cy])
            face = (v @ u) / (np.linalg.norm(v, axis=1) + 1e-6) > 0.8
            cv2.polylines(layer, [c.poly[face]], False, 1.0, 1)
    edge = cv2.dilate(edge.astype(np.uint8), np.ones((2, 2), np.uint8)) if sc.s > 0.7 else edge
    layer += 1.2 * edge


@pattern(23)
def mitochondria(sc, cells, layer):
    """Class 23: short worm-like tubules in the cytoplasm."""
    for c in cells:
        pts = cyto_points(sc, c, int(sc.rng.integers(15, 30)))
        a = sc.rng.uniform(0, 2 * np.pi, (len(pts), 1)) + np.array([0.0, 0.5, 1.0]) * sc.rng.normal(0, 0.6, (len(pts), 1))
        steps = np.cumsum(1.6 * sc.s * np.stack([np.cos(a), np.sin(a)], -1), 1)
        worms = (pts[:, None] + np.concatenate([np.zeros((len(pts), 1, 2)), steps], 1)).round().astype(np.int32)
        cv2.polylines(layer, list(worms), False, 1.6, 1)


@pattern(24)
def aggresome(sc, cells, layer):
    """Class 24: one large bright perinuclear blob."""
    for c in cells:
        p, a = _beside_nucleus(sc, c, 3.0)
        ax = tuple(max(1, round(v)) for v in sc.rng.uniform(2.5, 4.0, 2) * sc.s)
        cv2.ellipse(layer, _pt(p), ax, np.degrees(a), 0, 360, 1.6, -1)


@pattern(25)
def cytosol(sc, cells, layer):
    """Class 25: diffuse cytoplasm fill."""
    m = mask_of(sc, cells, False)
    layer += m * (0.6 + 0.08 * smooth_noise(sc.rng, sc.size, 2 * sc.s))


@pattern(26)
def cytoplasmic_bodies(sc, cells, layer):
    """Class 26: a few medium bright dots in the cytoplasm."""
    for c in cells:
        splat(layer, cyto_points(sc, c, int(sc.rng.integers(1, 4))), 1.1 * sc.s, 1.8)


@pattern(27)
def rods_and_rings(sc, cells, layer):
    """Class 27: short rods and small rings."""
    for c in cells:
        for p in cyto_points(sc, c, int(sc.rng.integers(2, 6))):
            if sc.rng.random() < 0.5:
                a = sc.rng.uniform(0, np.pi)
                d = sc.rng.uniform(2.0, 3.0) * sc.s * np.array([np.cos(a), np.sin(a)])
                cv2.line(layer, _pt(p - d), _pt(p + d), 2.0, 1)
            else:
                cv2.circle(layer, _pt(p), max(1, round(1.5 * sc.s)), 2.0, 1)
