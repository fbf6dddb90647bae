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
from hpa.synthetic.mixing.pool import SyntheticPool, load_manifests

MIXING_STRATEGIES: Registry = Registry("mixing strategy")
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
    """Training items planned by a strategy: ``plan(epoch, i, rng)`` -> ``("real", j)``,
    ``("syn", j)``, ``("mix", j, k, lam)`` or ``("pair", j, k)`` (j real, k synthetic indices).

    Codes are ``epoch * n + i`` as from the samplers; returns ``(x, y, i)``. ``log``, when a list,
    receives the Id of every image loaded (``("real", Id)`` / ``("syn", Id, source_id)``): tests use it.
    """

    def __init__(self, real, real_ids, pool: SyntheticPool, n: int, plan, seed: int):
        self.real, self.real_ids, self.pool, self.n, self.plan = real, real_ids, pool, int(n), plan
        self.seed, self.n_real, self.log = int(seed), len(real), None
        self.syn = HPADataset(pool.images, pool.y, real.transform)

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
        if step[0] == "real":
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
        return x, y, i


class Strategy:
    """``none``: real images only (the baseline). Subclasses override the hooks they need."""

    def __init__(self, cfg: ExperimentConfig, pool: SyntheticPool | None, seed: int):
        self.cfg, self.syn_cfg, self.pool, self.seed = cfg, cfg.synthetic, pool, int(seed)
        self.dataset: MixedTrainSet | None = None
        self._base_lrs = None
        self.weights: np.ndarray | None = None        # pool draw probabilities (None = uniform)

    def wrap_train(self, real, y: np.ndarray, ids: np.ndarray):
        """Return ``(train_dataset, labels_for_the_sampler)`` given the real ``EpochDataset``."""
        return real, y

    def make(self, real, ids, n: int, plan) -> MixedTrainSet:
        """Build (and remember) the :class:`MixedTrainSet` of this strategy."""
        self.dataset = MixedTrainSet(real, ids, self.pool, n, plan, self.seed)
        return self.dataset

    def batch_loss(self, model, loss_fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch (plain: ``loss_fn(model(x, y), y)``)."""
        return loss_fn(model(x, y), y)

    def start_epoch(self, trainer) -> None:
        """Called before each training epoch (``trainer.epoch`` = epochs done)."""

    def fit_weights(self, y: np.ndarray) -> None:
        """Set the pool draw probabilities from the fold's real training labels ``y`` (``synthetic.sample``)."""
        self.weights = pool_weights(self.pool.y, y, self.syn_cfg.sample)

    def draw(self, rng: np.random.Generator) -> int:
        """One pool index: uniform, or by ``self.weights``."""
        m = len(self.pool)
        return rng.integers(m) if self.weights is None else rng.choice(m, p=self.weights)

    def subset(self, n_real: int) -> np.ndarray:
        """A fixed seeded choice of ``round(ratio * n_real)`` pool indices (all of them when fewer),
        uniform or weighted by ``self.weights`` (without replacement)."""
        m = min(len(self.pool), max(1, int(round(self.syn_cfg.ratio * n_real))))
        rng = np.random.default_rng([self.seed, 99])
        if self.weights is None:
            return np.sort(rng.permutation(len(self.pool))[:m])
        return np.sort(rng.choice(len(self.pool), size=m, replace=False, p=self.weights))

    def counts(self) -> dict:
        """Used/excluded synthetic counts of this fold (``{"strategy": name}`` for ``none``)."""
        out = {"strategy": self.syn_cfg.strategy}
        return out | (self.pool.counts() if self.pool is not None else {"used": 0, "excluded": 0})


MIXING_STRATEGIES.register("none")(Strategy)


@MIXING_STRATEGIES.register("concat")
class Concat(Strategy):
    """Real plus a fixed ``ratio * n_real`` synthetic images, every epoch (Full Concatenation)."""

    def wrap_train(self, real, y, ids):
        """Real items ``0..n-1`` then the synthetic subset."""
        self.fit_weights(y)
        sel, n = self.subset(len(real)), len(real)
        plan = lambda e, i, rng: ("real", i) if i < n else ("syn", sel[i - n])  # noqa: E731
        return self.make(real, ids, n + len(sel), plan), np.vstack([y, self.pool.y[sel]])


@MIXING_STRATEGIES.register("replace")
class Replace(Strategy):
    """Synthetic images only: the same fixed subset as ``concat`` (Full Replacement)."""

    def wrap_train(self, real, y, ids):
        """Only the synthetic subset."""
        self.fit_weights(y)
        sel = self.subset(len(real))
        return self.make(real, ids, len(sel), lambda e, i, rng: ("syn", sel[i])), self.pool.y[sel]


@MIXING_STRATEGIES.register("local_replace")
class LocalReplace(Strategy):
    """Each real image swapped, with probability p, for one of its own variants (same source_id)."""

    def wrap_train(self, real, y, ids):
        """Same length as the real set; images without variants stay real."""
        var = self.pool.variants()
        p = self.syn_cfg.p

        def plan(epoch, i, rng):
            options = var.get(str(ids[i]))
            if options is not None and rng.random() < p:
                return ("syn", options[rng.integers(len(options))])
            return ("real", i)
        return self.make(real, ids, len(real), plan), y


@MIXING_STRATEGIES.register("global_replace")
class GlobalReplace(Strategy):
    """Each real image swapped, with probability p, for any synthetic image (Diff-Aug / MVC)."""

    def wrap_train(self, real, y, ids):
        """Same length as the real set."""
        self.fit_weights(y)
        p = self.syn_cfg.p
        plan = lambda e, i, rng: ("syn", self.draw(rng)) if rng.random() < p else ("real", i)  # noqa: E731
        return self.make(real, ids, len(real), plan), y


@MIXING_STRATEGIES.register("mixup")
class Mixup(Strategy):
    """Every real image mixed with a random synthetic one, lambda ~ Beta(alpha, alpha) (float input)."""

    def wrap_train(self, real, y, ids):
        """Same length as the real set; items are float 0-255 blends with blended targets."""
        self.fit_weights(y)
        a = self.syn_cfg.alpha
        plan = lambda e, i, rng: ("mix", i, self.draw(rng), rng.beta(a, a))  # noqa: E731
        return self.make(real, ids, len(real), plan), y


class PairStrategy(Strategy):
    """Batches of 8-channel (real RGBY, synthetic RGBY) pairs with 56 targets (real, synthetic)."""

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

    def batch_loss(self, model, loss_fn, x, y):
        """BCE-style loss of the head on mixed features against mixed targets.

        One forward of the (possibly DDP-wrapped) model on both halves, so BatchNorm sees both and
        DDP synchronises the gradients (see ``HPAClassifier.forward``'s ``mix``)."""
        xr, yr, xs, ys = self.split(x, y)
        a = torch.tensor(float(self.syn_cfg.alpha))
        lam = torch.distributions.Beta(a, a).sample((len(xr), 1)).to(x.device)
        logits = model(torch.cat([xr, xs]), None, mix=lam)
        return loss_fn(logits, lam * yr + (1 - lam) * ys)


@MIXING_STRATEGIES.register("mix_loss")
class MixLoss(PairStrategy):
    """Separate losses on the real and the synthetic image: ``(1 - lam) L_real + lam L_syn`` (Lin & Cao)."""

    def batch_loss(self, model, loss_fn, x, y):
        """The lam-weighted sum of the two losses (``synthetic.lam`` weights the synthetic term)."""
        xr, yr, xs, ys = self.split(x, y)
        logits = model(torch.cat([xr, xs]), torch.cat([yr, ys]))
        lam = float(self.syn_cfg.lam)
        return (1 - lam) * loss_fn(logits[: len(xr)], yr) + lam * loss_fn(logits[len(xr):], ys)


@MIXING_STRATEGIES.register("two_phase")
class TwoPhase(Concat):
    """``concat`` for the first ``epochs - finetune_epochs`` epochs, then real only at
    ``finetune_lr_scale`` x the scheduled lr (MVC paper). The epoch length stays fixed: in the
    fine-tune phase the synthetic slots draw random real images."""

    def wrap_train(self, real, y, ids):
        """The ``concat`` set, whose synthetic slots turn real in the fine-tune phase."""
        ds, labels = super().wrap_train(real, y, ids)
        first, n, phase1 = ds.plan, len(real), self.phase1_epochs()
        ds.plan = lambda e, i, rng: first(e, i, rng) if e < phase1 or i < n else ("real", rng.integers(n))
        return ds, labels

    def phase1_epochs(self) -> int:
        """Epochs of real plus synthetic before fine-tuning (HPAError when none would be left)."""
        k = self.syn_cfg.finetune_epochs
        if not 0 < k < self.cfg.train.epochs:
            raise HPAError(f"synthetic.finetune_epochs: {k} must be in 1..train.epochs-1 "
                           f"({self.cfg.train.epochs - 1})")
        return self.cfg.train.epochs - k

    def start_epoch(self, trainer) -> None:
        """Scale the scheduler's base lrs in the fine-tune phase (idempotent, so --resume is exact)."""
        sched = trainer.sched
        if self._base_lrs is None:
            self._base_lrs = list(sched.base_lrs)
        scale = self.syn_cfg.finetune_lr_scale if trainer.epoch >= self.phase1_epochs() else 1.0
        sched.base_lrs = [b * scale for b in self._base_lrs]
        sched._apply()


def build_strategy(cfg: ExperimentConfig, fold: int, train_ids, val_ids, size: int,
                   seed: int) -> Strategy:
    """Return fold ``fold``'s strategy ``cfg.synthetic.strategy`` with its leak-free pool.

    ``none`` loads nothing; any other strategy loads ``cfg.synthetic.manifests`` and raises HPAError
    when no synthetic image is left for this fold after the exclusions.
    """
    s = cfg.synthetic
    cls = MIXING_STRATEGIES.get(s.strategy)          # unknown name: fails before any file is read
    if s.strategy == "none":
        return cls(cfg, None, seed)
    if s.sample not in SAMPLING:
        raise HPAError(f"synthetic.sample: '{s.sample}' is not one of {', '.join(SAMPLING)}")
    if not 0 <= s.p <= 1 or s.alpha <= 0 or not 0 <= s.lam <= 1 or s.ratio <= 0:
        raise HPAError(f"synthetic: need 0<=p<=1, alpha>0, 0<=lam<=1, ratio>0 "
                       f"(got p={s.p}, alpha={s.alpha}, lam={s.lam}, ratio={s.ratio})")
    manifest = load_manifests(s.manifests, s.allow_no_provenance)
    pool = SyntheticPool.for_fold(manifest, fold, train_ids, val_ids, size, s.min_filter_score,
                                  s.soft_labels)
    if len(pool) == 0:
        raise HPAError(f"fold {fold}: no synthetic image left after excluding leaks "
                       f"({pool.counts()['excluded_by']}); check synthetic.manifests")
    return cls(cfg, pool, seed)

