"""Distribution metrics of a synthetic image set, as pure functions on feature matrices.

The features are any ``(N, D)`` float arrays; ``hpa synth report`` passes the pooled penultimate layer of
the project's own 4-channel classifier (``HPAClassifier.features``), so no Inception weights are needed.

* ``fid``: Fréchet distance of two Gaussians fitted to the sets (torchmetrics
  ``FrechetInceptionDistance``, handed the features through an identity "feature extractor");
* ``kid``: kernel distance, unbiased MMD² with the cubic polynomial kernel, mean and sd over random
  subsets (torchmetrics ``KernelInceptionDistance``, same trick);
* ``precision_recall``: Kynkäänniemi et al. 2019, "Improved precision and recall metric for assessing
  generative models": precision = share of generated samples inside the real manifold (the union of
  balls around each real sample reaching its k-th nearest real neighbour), recall = share of real
  samples inside the generated manifold. Neither torchmetrics 1.9 nor any installed library has it
  (torch-fidelity's ``prc`` is not installed and would be a dependency for twenty lines), so it is
  written here on top of scikit-learn's ``NearestNeighbors``;
* ``compare``: all four, and ``split_halves`` / ``matched``: the sample-size-matched comparisons the
  report puts side by side (FID is biased by the number of samples, so every figure and its
  references are computed on sets of one size); ``per_class_quality`` / ``class_summary``: the same per
  class, with a shuffled-label control.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from hpa.classes import NUM_CLASSES

KID_SUBSETS = 100
METRICS = ("fid", "kid", "precision", "recall")


class _GivenFeatures(torch.nn.Module):
    """The feature extractor handed to torchmetrics: the inputs already are features."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _check(real: np.ndarray, fake: np.ndarray, least: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature matrices must be (N, D) with one D, got {real.shape} and {fake.shape}")
    if min(len(real), len(fake)) < least:
        raise ValueError(f"need at least {least} samples per set, got {len(real)} and {len(fake)}")
    return torch.from_numpy(real), torch.from_numpy(fake)


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to ``real`` and ``fake`` ``(N, D)`` features (0 = same)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    r, f = _check(real, fake)
    m = FrechetInceptionDistance(feature=_GivenFeatures(r.shape[1])).double()
    m.update(r, real=True)
    m.update(f, real=False)
    return max(float(m.compute()), 0.0)       # tiny negative values are round-off of a zero distance


def kid(real: np.ndarray, fake: np.ndarray, subset_size: int | None = None, subsets: int = KID_SUBSETS,
        seed: int = 0) -> tuple[float, float]:
    """Kernel distance (unbiased MMD², kernel ``(x.y / D + 1)^3``): ``(mean, sd)`` over ``subsets``
    random subsets of ``subset_size`` per set (default: the smaller set's size, capped at 1000)."""
    from torchmetrics.image.kid import KernelInceptionDistance
    r, f = _check(real, fake)
    size = int(subset_size or min(len(r), len(f), 1000))
    with warnings.catch_warnings():           # "will save all extracted features": they are given
        warnings.simplefilter("ignore", UserWarning)
        m = KernelInceptionDistance(feature=_GivenFeatures(r.shape[1]), subsets=subsets, subset_size=size)
    m.update(r, real=True)
    m.update(f, real=False)
    with torch.random.fork_rng(devices=[]):   # torchmetrics draws the subsets with torch's global RNG
        torch.manual_seed(seed)
        mean, sd = m.compute()
    return float(mean), float(sd)


def _kth_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row of ``x`` to its ``k``-th nearest other row."""
    from sklearn.neighbors import NearestNeighbors
    k = min(k, len(x) - 1)
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return dist[:, k]                         # column 0 is the point itself


def _coverage(support: np.ndarray, radii: np.ndarray, queries: np.ndarray) -> float:
    """Share of ``queries`` within ``radii[i]`` of some ``support[i]``."""
    from sklearn.metrics import pairwise_distances
    inside = pairwise_distances(queries, support) <= radii[None, :]
    return float(inside.any(1).mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with ``k``-NN manifolds; both in [0, 1]."""
    r, f = (t.numpy() for t in _check(real, fake))
    precision = _coverage(r, _kth_radius(r, k), f)
    recall = _coverage(f, _kth_radius(f, k), r)
    return precision, recall


def compare(real: np.ndarray, fake: np.ndarray, k: int = 3, seed: int = 0) -> dict:
    """``{fid, kid, kid_sd, precision, recall, n_real, n_fake}`` of ``fake`` against ``real``."""
    kd, kd_sd = kid(real, fake, seed=seed)
    p, r = precision_recall(real, fake, k)
    return {"fid": fid(real, fake), "kid": kd, "kid_sd": kd_sd, "precision": p, "recall": r,
            "n_real": int(len(real)), "n_fake": int(len(fake))}


def split_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves of ``range(n)`` (sizes ``n // 2`` and ``n - n // 2``)."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def matched(real: np.ndarray, fake: np.ndarray, controls: dict[str, np.ndarray] | None = None,
            repeats: int = 5, k: int = 3, seed: int = 0) -> dict:
    """Size-matched comparison of a generated set with its references.

    Each repeat splits ``real`` into disjoint halves A and B; B against A is the real-vs-real
    **floor**, and ``fake`` (and every array of ``controls``) is subsampled to ``len(B)`` and compared
    with the same A. Returns ``{"synthetic": {metric: [mean, sd]}, "floor": ..., <control>: ...,
    "n_per_set": len(B), "repeats": repeats}``; sd is over repeats (0 for one).
    """
    sets = {"synthetic": fake, **(controls or {})}
    runs: dict[str, list[dict]] = {name: [] for name in ["floor", *sets]}
    for rep in range(repeats):
        a, b = split_halves(len(real), seed + rep)
        runs["floor"].append(compare(real[a], real[b], k, seed + rep))
        rng = np.random.default_rng([seed, rep, 1])
        for name, x in sets.items():
            pick = rng.choice(len(x), size=min(len(b), len(x)), replace=False)
            runs[name].append(compare(real[a], x[np.sort(pick)], k, seed + rep))
    out: dict = {"n_per_set": int(len(real) - len(real) // 2), "repeats": int(repeats)}
    for name, rows in runs.items():
        out[name] = {m: [float(np.mean([r[m] for r in rows])), float(np.std([r[m] for r in rows]))]
                     for m in METRICS}
    return out


def per_class_quality(real_feats: np.ndarray, real_labels: list[list[int]], syn_feats: np.ndarray,
                      syn_labels: list[list[int]], min_images: int = 10, repeats: int = 5, k: int = 3,
                      seed: int = 0) -> list[dict | None]:
    """Per class ``c``: :func:`hpa.synthetic.quality.matched` of the real images carrying ``c`` against the
    synthetic images intended to carry ``c``, with the shuffled-label control (the synthetic images
    carrying ``c`` once the synthetic label sets are permuted). A class is scored only when each half
    of its real images and each synthetic set has at least ``min_images``; else its entry is None."""
    shuffled = [syn_labels[i] for i in np.random.default_rng(seed).permutation(len(syn_labels))]
    has = lambda labels, c: np.array([c in ls for ls in labels], dtype=bool)  # noqa: E731
    out: list[dict | None] = []
    for c in range(NUM_CLASSES):
        r, s, ctrl = has(real_labels, c), has(syn_labels, c), has(shuffled, c)
        if r.sum() // 2 < min_images or s.sum() < min_images or ctrl.sum() < min_images:
            out.append(None)
            continue
        res = matched(real_feats[r], syn_feats[s], {"control": syn_feats[ctrl]}, repeats, k, seed + c)
        out.append(res | {"n_real": int(r.sum()), "n_synthetic": int(s.sum())})
    return out


def class_summary(per_class: list[dict | None]) -> dict:
    """Mean over the scored classes of each metric's mean, for synthetic, floor and control."""
    scored = [p for p in per_class if p]
    if not scored:
        return {"n_classes": 0}
    out: dict = {"n_classes": len(scored)}
    for name in ("synthetic", "floor", "control"):
        out[name] = {m: float(np.mean([p[name][m][0] for p in scored])) for m in METRICS}
    out["closer_than_control"] = {m: int(sum(_better(m, p["synthetic"][m][0], p["control"][m][0])
                                             for p in scored)) for m in METRICS}
    return out


def _better(metric: str, a: float, b: float) -> bool:
    """True when value ``a`` is better than ``b`` (distances: lower; precision/recall: higher)."""
    return a < b if metric in ("fid", "kid") else a > b
