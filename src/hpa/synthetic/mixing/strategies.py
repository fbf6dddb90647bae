"""Ways of mixing synthetic images into one fold's training: the ``MIXING_STRATEGIES`` registry.

Dataset-level strategies rebuild the training set (``wrap_train``): ``concat``, ``replace``,
``local_replace``, ``global_replace``, ``mixup``, ``two_phase``. Loop-level strategies hand the loop
(real, synthetic) pairs as 8-channel batches and compute the loss themselves (``batch_loss``):
``mix_representation``, ``mix_loss``. Every random choice is seeded by (seed, epoch, index), so epochs
are repeatable and ``--resume`` continues identically. Validation never goes through a strategy.

``synthetic.sample`` chooses how pool images are drawn: ``uniform`` (every image alike) or ``rare``
(weight = 1 / the fold's real training count of the image's rarest label, so images carrying rare
classes are drawn more often; see :func:`pool_weights`). It applies wherever a strategy draws from the
whole pool (the fixed subset of concat / replace / two_phase, and the random draws of global_replace,
mixup, mix_representation, mix_loss); local_replace draws among one image's own variants.
"""
from __future__ import annotations


import numpy as np
import torch
from torch.utils.data import Dataset

from hpa.classes import NUM_CLASSES
from hpa.config import ExperimentConfig
from hpa.data.dataset import HPADataset
from hpa.errors import HPAError
from hpa.registry import Registry
from hpa.rundir import RunDir
from hpa.synthetic.mixing.pool import SyntheticPool, load_manifests
from hpa.synthetic.quota import class_targets, f1_deficit, select_quota

# every strategy's own settings are the keyword arguments of its class (``synthetic.params``, checked by
# the registry against them); the fixed ones are passed by build_strategy, not by a config
MIXING_STRATEGIES: Registry = Registry("mixing strategy", fixed=("pool", "seed", "epochs", "sample"))
C = NUM_CLASSES
SAMPLING = ("uniform", "rare")


def pool_weights(pool_y: np.ndarray, real_y: np.ndarray, how: str) -> np.ndarray | None:
    """Draw probabilities of the pool images (None = uniform).

    ``rare``: image i weighs ``1 / n[r_i]``, where ``n[c]`` is the number of real training images
    carrying class c (at least 1) and ``r_i`` the class of image i with the smallest ``n``; so the
    pool images of a class are drawn about equally often whatever its real frequency. An image
    without labels weighs like the most frequent class.
    """
    if how == "uniform":
        return None
    n = np.maximum((np.asarray(real_y) > 0).sum(0), 1).astype(float)
    has = np.asarray(pool_y) > 0
    rarest = np.where(has, n[None, :], np.inf).min(1)
    w = 1.0 / np.where(np.isfinite(rarest), rarest, n.max())
    return w / w.sum()


class MixedTrainSet(Dataset):
    """Training items planned by a strategy: ``plan(epoch, i, rng)`` -> ``("real", j)``, ``("extra", j)``
    (a real row drawn again), ``("syn", j)``, ``("mix", j, k, lam)`` or ``("pair", j, k)`` (j real, k synthetic indices).

    Codes are ``epoch * n + i`` as from the samplers; returns ``(x, y, i)``. ``log``, when a list,
    receives the Id of every image loaded (``("real", Id)`` / ``("syn", Id, source_id)``): tests use it.
    """

    def __init__(self, real, real_ids, pool: SyntheticPool | None, n: int, plan, seed: int, flag: bool = False):
        self.real, self.real_ids, self.pool, self.n, self.plan = real, real_ids, pool, int(n), plan
        self.seed, self.n_real, self.log, self.flag = int(seed), len(real), None, flag
        self.syn = HPADataset(pool.images, pool.y, real.transform) if pool is not None else None

    def __len__(self) -> int:
        return self.n

    def _real(self, epoch: int, j: int):
        if self.log is not None:
            self.log.append(("real", str(self.real_ids[j])))
        x, y, _ = self.real[epoch * self.n_real + int(j)]   # EpochDataset seeds the augmentation
        return x, y

    def _syn(self, epoch: int, k: int, i: int):
        if self.log is not None:
            self.log.append(("syn", str(self.pool.ids[k]), str(self.pool.source_ids[k])))
        t = self.syn.transform
        if t is not None and hasattr(t, "set_random_seed"):
            t.set_random_seed((self.seed * 7919 + epoch * 104_729 + i + 50_000_017) % 2**32)
        return self.syn[int(k)]

    def __getitem__(self, code: int):
        epoch, i = divmod(int(code), self.n)
        rng = np.random.default_rng([self.seed, epoch, i, 17])
        step = self.plan(epoch, i, rng)
        if step[0] in ("real", "extra"):
            x, y = self._real(epoch, step[1])
        elif step[0] == "syn":
            x, y = self._syn(epoch, step[1], i)
        else:
            (xr, yr), (xs, ys) = self._real(epoch, step[1]), self._syn(epoch, step[2], i)
            if step[0] == "pair":
                x, y = torch.cat([xr, xs]), torch.cat([yr, ys])
            else:
                lam = float(step[3])
                x, y = lam * xr.float() + (1 - lam) * xs.float(), lam * yr + (1 - lam) * ys
        if self.flag:       # 29th column: 1 for a row the loss down-weights (synthetic or extra draw)
            y = torch.cat([y, torch.tensor([float(step[0] in ("syn", "extra"))], dtype=y.dtype)])
        return x, y, i


class Strategy:
    """``none``: real images only (the baseline). Subclasses override the hooks they need and declare
    their own settings as keyword arguments of ``__init__`` (``synthetic.params``)."""

    uses_pool = False       # True: needs synthetic.manifests (a leak-free SyntheticPool per fold)

    def __init__(self, pool: SyntheticPool | None = None, seed: int = 0, epochs: int = 1, sample: str = "uniform"):
        self.pool, self.seed, self.epochs, self.sample = pool, int(seed), int(epochs), sample
        self.dataset: MixedTrainSet | None = None
        self.weights: np.ndarray | None = None        # pool draw probabilities (None = uniform)
        self.loss_weight = 1.0                         # weight of a synthetic row's loss (1 = like a real one)
        self.name, self.added = "none", None            # registry name (build_strategy), rows added per epoch
        self.fold = -1                                  # the fold it trains (build_strategy)

    def wrap_train(self, real, y: np.ndarray, ids: np.ndarray):
        """Return ``(train_dataset, labels_for_the_sampler)`` given the real ``EpochDataset``."""
        return real, y

    def make(self, real, ids, n: int, plan) -> MixedTrainSet:
        """Build (and remember) the :class:`MixedTrainSet` of this strategy."""
        self.dataset = MixedTrainSet(real, ids, self.pool, n, plan, self.seed, flag=self.loss_weight != 1.0)
        return self.dataset

    def batch_loss(self, model, loss_fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch: ``loss_fn(model(x, y), y)``; with a ``loss_weight`` the batch
        carries a 29th column flagging synthetic rows, whose loss then counts ``loss_weight`` times a real
        row's (the down-weighted synthetic loss of the tail-class studies)."""
        if y.shape[1] == C:
            return loss_fn(model(x, y), y)
        syn, y = y[:, C] > 0.5, y[:, :C]
        logits = model(x, y)
        if not syn.any() or syn.all():
            return loss_fn(logits, y) * (self.loss_weight if syn.all() else 1.0)
        n_r, n_s = float((~syn).sum()), float(syn.sum())
        return (n_r * loss_fn(logits[~syn], y[~syn])
                + self.loss_weight * n_s * loss_fn(logits[syn], y[syn])) / (n_r + n_s)

    def start_epoch(self, trainer) -> None:
        """Called before each training epoch (``trainer.epoch`` = epochs done)."""

    def fit_weights(self, y: np.ndarray) -> None:
        """Set the pool draw probabilities from the fold's real training labels ``y`` (``synthetic.sample``)."""
        self.weights = pool_weights(self.pool.y, y, self.sample)

    def draw(self, rng: np.random.Generator) -> int:
        """One pool index: uniform, or by ``self.weights``."""
        m = len(self.pool)
        return rng.integers(m) if self.weights is None else rng.choice(m, p=self.weights)

    def subset(self, n_real: int, ratio: float) -> np.ndarray:
        """A fixed seeded choice of ``round(ratio * n_real)`` pool indices (all of them when fewer),
        uniform or weighted by ``self.weights`` (without replacement)."""
        m = min(len(self.pool), max(1, int(round(ratio * n_real))))
        rng = np.random.default_rng([self.seed, 99])
        if self.weights is None:
            return np.sort(rng.permutation(len(self.pool))[:m])
        return np.sort(rng.choice(len(self.pool), size=m, replace=False, p=self.weights))

    def counts(self) -> dict:
        """``{strategy, used, excluded, ...}`` of this fold: the pool's counts, and ``added`` (rows a
        quota strategy adds to each epoch) once the training set is built."""
        out = {"strategy": self.name} | (self.pool.counts() if self.pool is not None else {"used": 0, "excluded": 0})
        return out | ({"added": self.added} if self.added is not None else {})


MIXING_STRATEGIES.register("none")(Strategy)


def _check(**limits) -> None:
    # a strategy's own range checks: one line naming the synthetic.params key
    for key, (value, ok, rule) in limits.items():
        if not ok:
            raise HPAError(f"synthetic.params.{key}: {value} must be {rule}")


class QuotaExtras(Strategy):
    """Shared by the strategies that add rows by the ``--balance-to`` rule (``hpa.synthetic.quota``): with
    ``quota`` N (or ``quota_share`` s: N = round(s x the fold's real training rows), so one setting
    serves every ``data.fraction``), class c gets ``max(0, N_c - count_c)`` extra rows, classes from the rarest of the fold's
    real training rows up, each row counting toward its whole label set; ``N_c = N``, or weighted by
    the class's out-of-fold F1 deficit in ``quota_run`` (``N_c = N (1 - F1_c) / mean(1 - F1)``)."""

    def __init__(self, pool=None, seed=0, epochs=1, sample="uniform", quota: int = 0, quota_share: float = 0.0,
                 quota_run: str = "", loss_weight: float = 1.0):
        super().__init__(pool, seed, epochs, sample)
        _check(quota=(quota, quota >= 0, ">= 0"), quota_share=(quota_share, 0 <= quota_share <= 1, "in [0, 1]"),
               loss_weight=(loss_weight, loss_weight >= 0, ">= 0"))
        self.quota, self.quota_share, self.quota_run = int(quota), float(quota_share), quota_run
        self.loss_weight = float(loss_weight)

    @property
    def uses_quota(self) -> bool:
        return bool(self.quota or self.quota_share)

    def targets(self, n_real: int) -> np.ndarray:
        """Per-class targets of the quota (F1-deficit weighted when ``quota_run`` is set)."""
        n = self.quota or int(round(self.quota_share * n_real))
        if not self.quota_run:
            return class_targets(n)
        # the deficits of the other folds only: fold k's own validation labels never steer its training
        others = [k for k in RunDir(self.quota_run).fold_numbers() if k != self.fold]
        return class_targets(n, f1_deficit(self.quota_run, others))

    def quota_rows(self, candidates: np.ndarray, y: np.ndarray, replace: bool) -> np.ndarray:
        """Indices into ``candidates`` (multi-hot) chosen by the quota against the real labels ``y``."""
        real = (np.asarray(y) > 0).sum(0)
        return select_quota(candidates, real, self.targets(len(y)), self.seed, replace=replace)


@MIXING_STRATEGIES.register("concat")
class Concat(QuotaExtras):
    """Real plus a fixed set of synthetic images every epoch (Full Concatenation): ``ratio * n_real`` of
    them, or, with ``quota``, those the ``--balance-to`` rule picks for this fold's real counts."""

    uses_pool = True

    def __init__(self, pool=None, seed=0, epochs=1, sample="uniform", ratio: float = 1.0, quota: int = 0,
                 quota_share: float = 0.0, quota_run: str = "", loss_weight: float = 1.0):
        super().__init__(pool, seed, epochs, sample, quota, quota_share, quota_run, loss_weight)
        _check(ratio=(ratio, ratio > 0, "> 0"))
        self.ratio = float(ratio)

    def selection(self, y: np.ndarray) -> np.ndarray:
        """The pool indices this fold trains on."""
        self.fit_weights(y)
        if self.uses_quota:
            return self.quota_rows(self.pool.y, y, replace=False)
        return self.subset(len(y), self.ratio)

    def wrap_train(self, real, y, ids):
        """Real items ``0..n-1`` then the synthetic selection."""
        sel, n = self.selection(y), len(real)
        self.added = len(sel)
        plan = lambda e, i, rng: ("real", i) if i < n else ("syn", sel[i - n])  # noqa: E731
        return self.make(real, ids, n + len(sel), plan), np.vstack([y, self.pool.y[sel]])


@MIXING_STRATEGIES.register("oversample")
class Oversample(QuotaExtras):
    """The control of the quota arms (no synthetic image): the same ``quota`` rule adds repeated draws
    of the fold's own real images carrying each class, so extra exposure alone is measured. Not the
    ``train.sampler: oversample`` sampler, which reweights the draws of an epoch without adding any."""

    def __init__(self, pool=None, seed=0, epochs=1, sample="uniform", quota: int = 40, quota_share: float = 0.0,
                 quota_run: str = "", loss_weight: float = 1.0):
        super().__init__(pool, seed, epochs, sample, 0 if quota_share else quota, quota_share, quota_run,
                         loss_weight)

    def extra(self, y: np.ndarray) -> np.ndarray:
        """Real row indices drawn (with repeats) by the quota."""
        return self.quota_rows(y, y, replace=True)

    def wrap_train(self, real, y, ids):
        """Real items ``0..n-1`` then the extra draws (flagged as extra rows for ``loss_weight``)."""
        extra, n = self.extra(y), len(real)
        self.added = len(extra)
        plan = lambda e, i, rng: ("real", i) if i < n else ("extra", extra[i - n])  # noqa: E731
        return self.make(real, ids, n + len(extra), plan), np.vstack([y, y[extra]])


@MIXING_STRATEGIES.register("augment")
class Augment(Oversample):
    """The steps control: as many extra rows as ``oversample`` adds, drawn uniformly from the fold's real
    images (each through the classic augmentation of ``train.augment``), so the arm trains for the
    same number of optimisation steps with no rare-class targeting and no new image."""

    def extra(self, y: np.ndarray) -> np.ndarray:
        """``len(oversample's draws)`` uniform real row indices."""
        m = len(super().extra(y))
        return np.random.default_rng([self.seed, 37]).integers(len(y), size=m)


@MIXING_STRATEGIES.register("replace")
class Replace(Concat):
    """Synthetic images only: the same fixed selection as ``concat`` (Full Replacement)."""

    def wrap_train(self, real, y, ids):
        """Only the synthetic selection."""
        sel = self.selection(y)
        return self.make(real, ids, len(sel), lambda e, i, rng: ("syn", sel[i])), self.pool.y[sel]


class ReplaceP(Strategy):
    """Strategies that swap each real image with probability ``p``."""

    uses_pool = True

    def __init__(self, pool=None, seed=0, epochs=1, sample="uniform", p: float = 0.5):
        super().__init__(pool, seed, epochs, sample)
        _check(p=(p, 0 <= p <= 1, "in [0, 1]"))
        self.p = float(p)


@MIXING_STRATEGIES.register("local_replace")
class LocalReplace(ReplaceP):
    """Each real image swapped, with probability p, for one of its own variants (same source_id)."""

    def wrap_train(self, real, y, ids):
        """Same length as the real set; images without variants stay real."""
        var = self.pool.variants()

        def plan(epoch, i, rng):
            options = var.get(str(ids[i]))
            if options is not None and rng.random() < self.p:
                return ("syn", options[rng.integers(len(options))])
            return ("real", i)
        return self.make(real, ids, len(real), plan), y


@MIXING_STRATEGIES.register("global_replace")
class GlobalReplace(ReplaceP):
    """Each real image swapped, with probability p, for any synthetic image (Diff-Aug / MVC)."""

    def wrap_train(self, real, y, ids):
        """Same length as the real set."""
        self.fit_weights(y)
        plan = lambda e, i, rng: ("syn", self.draw(rng)) if rng.random() < self.p else ("real", i)  # noqa: E731
        return self.make(real, ids, len(real), plan), y


@MIXING_STRATEGIES.register("mixup")
class Mixup(Strategy):
    """Every real image mixed with a random synthetic one, lambda ~ Beta(alpha, alpha) (float input)."""

    uses_pool = True

    def __init__(self, pool=None, seed=0, epochs=1, sample="uniform", alpha: float = 0.4):
        super().__init__(pool, seed, epochs, sample)
        _check(alpha=(alpha, alpha > 0, "> 0"))
        self.alpha = float(alpha)

    def wrap_train(self, real, y, ids):
        """Same length as the real set; items are float 0-255 blends with blended targets."""
        self.fit_weights(y)
        a = self.alpha
        plan = lambda e, i, rng: ("mix", i, self.draw(rng), rng.beta(a, a))  # noqa: E731
        return self.make(real, ids, len(real), plan), y


class PairStrategy(Strategy):
    """Batches of 8-channel (real RGBY, synthetic RGBY) pairs with 56 targets (real, synthetic)."""

    uses_pool = True

    def wrap_train(self, real, y, ids):
        """Same length as the real set; each real image paired with a random synthetic one."""
        self.fit_weights(y)
        return self.make(real, ids, len(real), lambda e, i, rng: ("pair", i, self.draw(rng))), y

    @staticmethod
    def split(x, y):
        """``(x_real, y_real, x_syn, y_syn)`` of a pair batch."""
        return x[:, :4], y[:, :C], x[:, 4:], y[:, C:]


@MIXING_STRATEGIES.register("mix_representation")
class MixRepresentation(PairStrategy):
    """Backbone features of the pair mixed with lambda ~ Beta(alpha, alpha), then the head (Lin & Cao).

    Margin heads get no targets here (their margin needs hard labels)."""

    def __init__(self, pool=None, seed=0, epochs=1, sample="uniform", alpha: float = 0.4):
        super().__init__(pool, seed, epochs, sample)
        _check(alpha=(alpha, alpha > 0, "> 0"))
        self.alpha = float(alpha)

    def batch_loss(self, model, loss_fn, x, y):
        """BCE-style loss of the head on mixed features against mixed targets.

        One forward of the (possibly DDP-wrapped) model on both halves, so BatchNorm sees both and
        DDP synchronises the gradients (see ``HPAClassifier.forward``'s ``mix``)."""
        xr, yr, xs, ys = self.split(x, y)
        a = torch.tensor(self.alpha)
        lam = torch.distributions.Beta(a, a).sample((len(xr), 1)).to(x.device)
        logits = model(torch.cat([xr, xs]), None, mix=lam)
        return loss_fn(logits, lam * yr + (1 - lam) * ys)


@MIXING_STRATEGIES.register("mix_loss")
class MixLoss(PairStrategy):
    """Separate losses on the real and the synthetic image: ``(1 - lam) L_real + lam L_syn`` (Lin & Cao)."""

    def __init__(self, pool=None, seed=0, epochs=1, sample="uniform", lam: float = 0.5):
        super().__init__(pool, seed, epochs, sample)
        _check(lam=(lam, 0 <= lam <= 1, "in [0, 1]"))
        self.lam = float(lam)

    def batch_loss(self, model, loss_fn, x, y):
        """The lam-weighted sum of the two losses (``lam`` weights the synthetic term)."""
        xr, yr, xs, ys = self.split(x, y)
        logits = model(torch.cat([xr, xs]), torch.cat([yr, ys]))
        return (1 - self.lam) * loss_fn(logits[: len(xr)], yr) + self.lam * loss_fn(logits[len(xr):], ys)


@MIXING_STRATEGIES.register("two_phase")
class TwoPhase(Concat):
    """``concat`` for the first ``epochs - finetune_epochs`` epochs, then real only at
    ``finetune_lr_scale`` x the scheduled lr (MVC paper). The epoch length stays fixed: in the
    fine-tune phase the synthetic slots draw random real images."""

    def __init__(self, pool=None, seed=0, epochs=1, sample="uniform", ratio: float = 1.0, quota: int = 0,
                 quota_share: float = 0.0, quota_run: str = "", loss_weight: float = 1.0, finetune_epochs: int = 2,
                 finetune_lr_scale: float = 0.1):
        super().__init__(pool, seed, epochs, sample, ratio, quota, quota_share, quota_run, loss_weight)
        _check(finetune_lr_scale=(finetune_lr_scale, finetune_lr_scale > 0, "> 0"),
               finetune_epochs=(finetune_epochs, 0 < finetune_epochs < self.epochs,
                                f"in 1..train.epochs-1 ({self.epochs - 1})"))
        self.finetune_epochs, self.finetune_lr_scale = int(finetune_epochs), float(finetune_lr_scale)

    def wrap_train(self, real, y, ids):
        """The ``concat`` set, whose synthetic slots turn real in the fine-tune phase."""
        ds, labels = super().wrap_train(real, y, ids)
        first, n, phase1 = ds.plan, len(real), self.phase1_epochs()
        ds.plan = lambda e, i, rng: first(e, i, rng) if e < phase1 or i < n else ("real", rng.integers(n))
        return ds, labels

    def phase1_epochs(self) -> int:
        """Epochs of real plus synthetic before fine-tuning."""
        return self.epochs - self.finetune_epochs

    def start_epoch(self, trainer) -> None:
        """Scale the learning rate in the fine-tune phase through the schedule's public phase scale
        (set at every epoch start, so --resume is exact)."""
        fine = trainer.epoch >= self.phase1_epochs()
        trainer.sched.set_phase_scale(self.finetune_lr_scale if fine else 1.0)


def build_strategy(cfg: ExperimentConfig, fold: int, train_ids, val_ids, size: int,
                   seed: int) -> Strategy:
    """Return fold ``fold``'s strategy (``synthetic.strategy`` with its ``synthetic.params``) and, for
    one that uses a pool, its leak-free pool of ``synthetic.manifests`` (HPAError when no synthetic
    image is left for this fold after the exclusions)."""
    s = cfg.synthetic
    cls = MIXING_STRATEGIES.get(s.strategy)          # unknown name: fails before any file is read
    params = MIXING_STRATEGIES.check_params(s.strategy, s.params or {}, "synthetic.params")
    if s.sample not in SAMPLING:
        raise HPAError(f"synthetic.sample: '{s.sample}' is not one of {', '.join(SAMPLING)}")
    cls(None, seed, cfg.train.epochs, s.sample, **params)     # its own range checks, before any file is read
    pool = None
    if cls.uses_pool:
        manifest = load_manifests(s.manifests, s.allow_no_provenance)
        pool = SyntheticPool.for_fold(manifest, fold, train_ids, val_ids, size, s.min_filter_score,
                                      s.soft_labels)
        if len(pool) == 0:
            raise HPAError(f"fold {fold}: no synthetic image left after excluding leaks "
                           f"({pool.counts()['excluded_by']}); check synthetic.manifests")
    strategy = cls(pool, seed, cfg.train.epochs, s.sample, **params)
    strategy.name, strategy.fold = s.strategy, int(fold)
    return strategy
