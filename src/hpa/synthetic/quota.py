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

import numpy as np
import pandas as pd

from hpa.classes import NUM_CLASSES
from hpa.errors import HPAError
from hpa.synthetic.modes import Job, ModeOptions
from hpa.synthetic.protocol import Generator

COUNTING = "an image counts toward every class of its label set"


@dataclass
class Quota:
    """``rule`` ``balance_to`` (reach ``n`` per class) or ``per_class`` (``n`` images per class)."""
    rule: str
    n: int

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
    for c in order:
        need = quota.n if quota.rule == "per_class" else max(0, quota.n - int(total[c]))
        if need == 0 or real[c] == 0:
            continue
        has_c = rows[[c in ls for ls in rows["labels"]]].reset_index(drop=True)
        block = gen.plan(has_c, opts, need, seed + len(jobs), f"{name}-c{c}", relabel, gamma)
        for job in block:
            planned_for[job.id] = c
            total[list(set(job.labels))] += 1
        made_for[c] += len(block)
        jobs += block
    record = {"rule": quota.rule, "n": quota.n, "seed": seed, "counting": COUNTING, "images": len(jobs),
              "real": real.tolist(), "synthetic": (total - real).tolist(), "total": total.tolist(),
              "planned_for": made_for.tolist(), "unreachable": unreachable}
    return jobs, planned_for, record
