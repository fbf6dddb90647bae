"""Per-class quotas for ``hpa synth generate``: ``--balance-to N`` and ``--per-class N``.

Macro F1 weighs the rarest class as much as the most frequent one, so synthetic images matter most
where real ones are few. Both options choose, for each class ``c``, label sets *from the generator's
own training rows that contain c* (real label sets, so co-occurring classes stay realistic) and let the
generator plan its jobs from those rows only:

* ``--balance-to N``: classes are visited from the rarest (fewest training rows) to the most frequent;
  class ``c`` gets ``max(0, N - count[c])`` images, where ``count`` is real plus the synthetic images
  planned so far. **An image counts toward every class of its label set** (as its multi-hot target
  does in training), so the images made for a rare class also raise the classes it co-occurs with, and
  those later need fewer. Afterwards every class with at least one training row has at least ``N``
  real-plus-synthetic training examples; a class with none cannot be reached and is listed as such.
* ``--per-class N``: ``N`` images planned for every class (Lin & Cao: 384 per class, 10,752 in all),
  each counting toward its whole label set as above.

The generator's training rows are the training images of the fold it held out, i.e. the training set of
the fold-k classifier that may use its images, so ``count`` is that classifier's real count.
Deterministic per seed: the classes are visited in a fixed order and block ``b`` of jobs is planned
with seed ``seed + (jobs planned before it)``, so image ``i`` still has seed ``seed + i``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.classes import NUM_CLASSES
from hpa.data.labels import label_matrix, read_labels
from hpa.errors import HPAError
from hpa.metrics import per_class_f1
from hpa.rundir import RunDir, read_oof
from hpa.synthetic.modes import Job, ModeOptions
from hpa.synthetic.protocol import Generator

COUNTING = "an image counts toward every class of its label set"


@dataclass
class Quota:
    """``rule`` ``balance_to`` (reach ``n`` per class) or ``per_class`` (``n`` images per class);
    ``deficit`` (``(28,)``, optional) weighs each class's ``balance_to`` target by its F1 deficit."""
    rule: str
    n: int
    deficit: np.ndarray | None = None

    def __post_init__(self):
        if self.rule not in ("balance_to", "per_class"):
            raise HPAError(f"quota rule '{self.rule}' is not balance_to or per_class")
        if self.n < 1:
            raise HPAError(f"--{self.rule.replace('_', '-')}: {self.n} must be at least 1")


def class_counts(labels: list[list[int]]) -> np.ndarray:
    """``(28,)`` number of label sets carrying each class."""
    out = np.zeros(NUM_CLASSES, dtype=int)
    for ls in labels:
        out[list(set(ls))] += 1
    return out


def class_targets(n: int, deficit: np.ndarray | None = None) -> np.ndarray:
    """``(28,)`` per-class targets of a ``balance_to n`` quota: ``n`` for every class, or, given each
    class's F1 deficit (``1 - out-of-fold F1``), ``round(n * deficit_c / mean(deficit))``: the same total,
    aimed at the classes the classifier gets wrong (a class it already gets right needs nothing)."""
    if deficit is None:
        return np.full(NUM_CLASSES, int(n))
    d = np.clip(np.asarray(deficit, dtype=float), 0.0, 1.0)
    if d.shape != (NUM_CLASSES,):
        raise HPAError(f"F1 deficits: need {NUM_CLASSES} values, got {d.shape}")
    return np.round(n * d / max(d.mean(), 1e-9)).astype(int)


def f1_deficit(run_dir, folds: list[int] | None = None) -> np.ndarray:
    """``1 - per-class F1`` (at 0.5) of a classifier run's out-of-fold predictions (its ``oof.csv``
    against the ``train.csv`` of its config's data root; only the rows of ``folds`` when given): where
    a quota should aim."""
    run = RunDir(run_dir)
    cfg = run.load_config()
    truth = read_labels(Path(cfg.data.root) / cfg.data.train_csv).set_index("Id")
    ids, fold_of, probs = read_oof(run.oof, truth.index.tolist())
    keep = np.isin(fold_of, folds) if folds is not None else np.ones(len(ids), bool)
    y = label_matrix(truth.loc[np.asarray(ids)[keep]].reset_index())
    return 1.0 - per_class_f1(y, probs[keep] > 0.5)


def select_quota(labels: np.ndarray, real: np.ndarray, targets: np.ndarray, seed: int,
                 replace: bool = False) -> np.ndarray:
    """Indices into ``labels`` (``(M, 28)`` multi-hot candidates: a synthetic pool, or the real rows for
    oversampling) chosen by the ``--balance-to`` rule: classes from the rarest of ``real`` (``(28,)``
    counts) up, class c gets ``max(0, targets[c] - count[c])`` candidates carrying c, each counting
    toward its whole label set. Without ``replace`` a candidate is used once (a class whose candidates
    run out gets fewer); with it candidates repeat (oversampling 8 real images to 40)."""
    has = np.asarray(labels) > 0
    total = np.asarray(real, dtype=int).copy()
    free = np.ones(len(has), bool)
    rng = np.random.default_rng([seed, 31])
    out: list[int] = []
    for c in sorted(range(NUM_CLASSES), key=lambda c: (real[c], c)):
        need = max(0, int(targets[c]) - int(total[c]))
        cand = np.flatnonzero(has[:, c] & (free | replace))
        if need == 0 or len(cand) == 0:
            continue
        pick = rng.choice(cand, size=need, replace=True) if replace else rng.permutation(cand)[:need]
        free[pick] = False
        total += has[pick].sum(0)
        out += pick.tolist()
    return np.array(out, dtype=int)

#: a quota may plan at most this many synthetic images per real training row of the generator
MAX_PER_REAL = 100


def check_quota_size(quota: Quota, real: np.ndarray, n_rows: int) -> None:
    """HPAError before any planning when ``quota`` would ask for more than :data:`MAX_PER_REAL` images
    per real training row (``--balance-to 1000000000`` would otherwise plan, silently, until memory
    runs out). The bound counts each class's images as if none of them lifted another class."""
    reachable = real > 0
    need = (np.maximum(0, quota.n - real) if quota.rule == "balance_to" else np.full(len(real), quota.n))
    bound, limit = int(need[reachable].sum()), MAX_PER_REAL * max(n_rows, 1)
    if bound > limit:
        raise HPAError(f"--{quota.rule.replace('_', '-')}: {quota.n} would plan up to {bound:,} images from the "
                       f"generator's {n_rows} training images (at most {MAX_PER_REAL} per real image, {limit:,}); "
                       "ask for fewer")


def plan_quota(gen: Generator, rows: pd.DataFrame, opts: ModeOptions, quota: Quota, seed: int, name: str,
               relabel: bool, gamma: float) -> tuple[list[Job], dict[str, int], dict]:
    """Plan the jobs of a quota run with ``gen.plan`` on the rows of one class at a time.

    ``rows`` needs ``Id, Target, labels``. Returns ``(jobs, planned_for, record)``: ``planned_for`` maps a
    job Id to the class it was planned for; ``record`` is what ``plan.json`` keeps (the rule, the
    counting, real / synthetic / total counts per class, unreachable classes).
    """
    real = class_counts(list(rows["labels"]))
    check_quota_size(quota, real, len(rows))
    total = real.copy()
    jobs: list[Job] = []
    planned_for: dict[str, int] = {}
    made_for = np.zeros(NUM_CLASSES, dtype=int)
    # rarest first (ties by class index): their label sets also lift the classes they co-occur with
    order = sorted(range(NUM_CLASSES), key=lambda c: (real[c], c))
    unreachable = [c for c in order if real[c] == 0]
    targets = class_targets(quota.n, quota.deficit)
    for c in order:
        need = quota.n if quota.rule == "per_class" else max(0, int(targets[c]) - int(total[c]))
        if need == 0 or real[c] == 0:
            continue
        has_c = rows[[c in ls for ls in rows["labels"]]].reset_index(drop=True)
        block = gen.plan(has_c, opts, need, seed + len(jobs), f"{name}-c{c}", relabel, gamma)
        for job in block:
            planned_for[job.id] = c
            total[list(set(job.labels))] += 1
        made_for[c] += len(block)
        jobs += block
    record = {"rule": quota.rule, "n": quota.n, "seed": seed,
              "targets": targets.tolist() if quota.rule == "balance_to" else None, "counting": COUNTING, "images": len(jobs),
              "real": real.tolist(), "synthetic": (total - real).tolist(), "total": total.tolist(),
              "planned_for": made_for.tolist(), "unreachable": unreachable}
    return jobs, planned_for, record
