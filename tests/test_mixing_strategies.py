"""Synthetic strategies: what each puts in a training item, and the leak test for every strategy
(instrumented training: no validation image, nor any excluded synthetic image, reaches a batch)."""
import hashlib

import numpy as np
import pytest
import torch
import yaml

from hpa.config import load_config
from hpa.errors import HPAError
from hpa.models.classifier import HPAClassifier
from hpa.samplers import EpochDataset
from hpa.data.dataset import HPADataset
from hpa.synthetic.mixing.pool import SyntheticPool
from hpa.synthetic.mixing.strategies import MIXING_STRATEGIES, build_strategy
from hpa.training.run import run
from test_mixing_pool import make_synth

ALL = ["none", "concat", "replace", "local_replace", "global_replace", "mixup", "mix_representation",
       "mix_loss", "two_phase"]


def test_registry_lists_every_strategy():
    assert sorted(MIXING_STRATEGIES.names()) == sorted(ALL)


# ---------------------------------------------------------------- unit: items of each strategy
def tiny_pool(n_real=6):
    """Real image i is all-i pixels with label i; synthetic k is 100+k, source real k // 2, label 20."""
    real_imgs = np.stack([np.full((4, 4, 4), i, np.uint8) for i in range(n_real)])
    y = np.zeros((n_real, 28), np.uint8)
    y[np.arange(n_real), np.arange(n_real)] = 1
    ids = np.array([f"r{i}" for i in range(n_real)])
    syn_y = np.zeros((4, 28), np.float32)
    syn_y[:, 20] = 1
    pool = SyntheticPool(0, np.array([f"syn-{k}" for k in range(4)]), np.array(["r0", "r0", "r1", ""]),
                         syn_y, np.stack([np.full((4, 4, 4), 100 + k, np.uint8) for k in range(4)]))
    real = EpochDataset(HPADataset(real_imgs, y, None), 0)
    return real, y, ids, pool


def strategy(name, epochs=3, **syn):
    cfg = load_config(None, [f"synthetic.strategy={name}", f"train.epochs={epochs}"] +
                      [f"synthetic.{k}={v}" for k, v in syn.items()])
    real, y, ids, pool = tiny_pool()
    s = MIXING_STRATEGIES.get(name)(cfg, pool, 0)
    ds, labels = s.wrap_train(real, y, ids)
    return s, ds, labels


def values(ds, epoch=0):
    return [int(ds[epoch * len(ds) + i][0][0, 0, 0]) for i in range(len(ds))]


def test_concat_and_replace():
    _, ds, labels = strategy("concat", ratio=0.5)
    assert values(ds) == [0, 1, 2, 3, 4, 5, 101, 102, 103]     # real, then a fixed seeded 3 of 4
    assert values(ds, 1) == values(ds)
    assert labels.shape == (9, 28) and labels[6:, 20].tolist() == [1, 1, 1]
    _, ds, labels = strategy("replace", ratio=1.0)          # 6 asked, the pool has 4
    assert sorted(values(ds)) == [100, 101, 102, 103] and labels.shape == (4, 28)


def test_local_and_global_replacement():
    _, ds, _ = strategy("local_replace", p=1.0)
    v = values(ds)
    assert v[0] in (100, 101) and v[1] == 102 and v[2:] == [2, 3, 4, 5]   # only own variants
    _, ds, _ = strategy("global_replace", p=0.0)
    assert values(ds) == [0, 1, 2, 3, 4, 5]
    _, ds, _ = strategy("global_replace", p=1.0)
    assert min(values(ds)) >= 100
    _, ds, _ = strategy("global_replace", p=0.5)
    assert values(ds, 0) == values(ds, 0) and values(ds, 0) != values(ds, 1)   # seeded per epoch


def test_mixup_blends_pixels_and_labels():
    _, ds, _ = strategy("mixup", alpha=0.4)
    x, y, i = ds[3]
    assert x.dtype == torch.float32 and i == 3
    lam = float(y[3])
    k = int(round((float(x[0, 0, 0]) - lam * 3) / (1 - lam))) - 100
    assert 0 <= k < 4 and float(x[0, 0, 0]) == pytest.approx(lam * 3 + (1 - lam) * (100 + k), abs=1e-4)
    assert float(y[20]) == pytest.approx(1 - lam)


def test_pair_strategies_and_their_losses():
    s, ds, _ = strategy("mix_loss", lam=0.25)
    x, y, _ = ds[2]
    assert x.shape == (8, 4, 4) and y.shape == (56,) and int(x[0, 0, 0]) == 2 and int(x[4, 0, 0]) >= 100
    xb = torch.stack([ds[i][0] for i in range(4)])
    yb = torch.stack([ds[i][1] for i in range(4)])
    model = lambda x, y=None: x.float().mean((2, 3)).repeat(1, 7)[:, :28] / 100   # noqa: E731
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    expected = 0.75 * loss_fn(model(xb[:, :4]), yb[:, :28]) + 0.25 * loss_fn(model(xb[:, 4:]), yb[:, 28:])
    assert float(s.batch_loss(model, loss_fn, xb, yb)) == pytest.approx(float(expected), rel=1e-6)
    from hpa.models import build_model
    cfg = load_config(None, ["model.name=test_resnet"])
    net = build_model(cfg.model).train()
    s, ds, _ = strategy("mix_representation")
    xb = torch.stack([ds[i][0] for i in range(4)])
    yb = torch.stack([ds[i][1] for i in range(4)])
    loss = s.batch_loss(net, loss_fn, xb, yb)
    loss.backward()
    assert torch.isfinite(loss) and net.backbone.conv1[0].weight.grad.abs().sum() > 0


def test_two_phase_goes_real_only_with_a_lower_lr():
    s, ds, _ = strategy("two_phase", epochs=3, ratio=0.5, finetune_epochs=1, finetune_lr_scale=0.1)
    assert min(values(ds, 1)[6:]) >= 100 and max(values(ds, 2)) < 100
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    from hpa.optim import LRSchedule
    trainer = type("T", (), {})()
    trainer.sched, trainer.epoch = LRSchedule(opt, None, 1), 1
    s.start_epoch(trainer)
    assert opt.param_groups[0]["lr"] == 1.0
    trainer.epoch = 2
    s.start_epoch(trainer)
    s.start_epoch(trainer)                                   # idempotent (resume)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    with pytest.raises(HPAError, match=r"synthetic.finetune_epochs: 3 must be in 1..train.epochs-1 \(2\)"):
        strategy("two_phase", epochs=3, finetune_epochs=3)


def test_unknown_strategy_and_bad_options():
    cfg = load_config(None, ["synthetic.strategy=cutmix"])
    with pytest.raises(HPAError, match="cutmix"):
        build_strategy(cfg, 0, [], [], 32, 0)
    cfg = load_config(None, ["synthetic.strategy=global_replace"])
    cfg.synthetic.p = 1.5             # load_config refuses it already; the strategy checks again
    with pytest.raises(HPAError, match=r"synthetic: need 0<=p<=1"):
        build_strategy(cfg, 0, [], [], 32, 0)


# ---------------------------------------------------------------- leak test, every strategy
def digest(a) -> str:
    return hashlib.sha1(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def leak_setup(tiny_demo, tmp_path_factory):
    work = tmp_path_factory.mktemp("leak")
    synth = make_synth(tiny_demo, work)
    cfg = {"data": {"root": str(tiny_demo), "image_size": 32, "cache_dir": str(work / "cache")},
           "folds": {"n_splits": 3, "file": str(synth["folds_csv"])}, "runs_dir": str(work / "runs"),
           "model": {"name": "test_resnet"}, "loss": [{"name": "bce"}],
           "train": {"epochs": 1, "batch_size": 16, "num_workers": 0, "augment": []},
           "synthetic": {"manifests": synth["manifests"], "finetune_epochs": 1, "p": 0.7}}
    path = work / "leak.yaml"
    path.write_text(yaml.safe_dump(cfg))
    from hpa.data.images import read_kaggle_rgby
    from hpa.synthetic.mixing.pool import load_manifests

    fold_of = synth["fold_of"]
    val = set(fold_of.index[fold_of == 0])
    man = load_manifests(synth["manifests"])
    forbidden_syn = {r.Id for r in man.itertuples() if r.trained_on is None or 0 in r.trained_on
                     or r.source_id in val}
    pix = {r.Id: digest(read_kaggle_rgby(r.image_dir, r.Id, 32)) for r in man.itertuples()}
    real_pix = {i: digest(read_kaggle_rgby(tiny_demo / "train", i, 32)) for i in fold_of.index}
    return {"path": path, "val": val, "forbidden_syn": forbidden_syn, "fold_of": fold_of,
            "bad_pix": {pix[i] for i in forbidden_syn} | {real_pix[i] for i in val},
            "good_pix": {pix[i] for i in set(pix) - forbidden_syn} | {real_pix[i] for i in set(real_pix) - val}}


@pytest.mark.parametrize("name", ALL)
def test_no_validation_image_reaches_training(name, leak_setup, monkeypatch):
    seen, logs = [], []
    orig_norm = HPAClassifier.normalise

    def recording(self, x):                        # every raw image the model trains on
        if self.training:
            seen.extend(digest(img) for img in x.detach().permute(0, 2, 3, 1).numpy()
                        if x.dtype == torch.uint8)
        return orig_norm(self, x)
    monkeypatch.setattr(HPAClassifier, "normalise", recording)
    from hpa.synthetic.mixing import strategies as strat_mod
    orig_make = strat_mod.MixedTrainSet.__init__

    def logging_init(self, *a, **k):
        orig_make(self, *a, **k)
        self.log = logs
    monkeypatch.setattr(strat_mod.MixedTrainSet, "__init__", logging_init)
    epochs = 2 if name == "two_phase" else 1           # two_phase: 1 mixed + 1 real-only epoch
    cfg = load_config(leak_setup["path"], [f"synthetic.strategy={name}", f"name=leak_{name}",
                                           f"train.epochs={epochs}"])
    metrics = run(cfg, folds=[0])
    counts = metrics["folds"]["0"]["synthetic"]
    if name == "none":
        assert logs == [] and counts == {"strategy": "none", "used": 0, "excluded": 0}
        assert "## Synthetic data" not in (cfg.run_dir / "report.md").read_text()
        assert seen and set(seen) <= leak_setup["good_pix"]
        return
    n_tr = int((leak_setup["fold_of"] != 0).sum())
    assert counts["used"] == 2 * n_tr and counts["excluded"] == 288 - 2 * n_tr
    real = [e[1] for e in logs if e[0] == "real"]
    syn = [e for e in logs if e[0] == "syn"]
    assert syn, "the strategy never used a synthetic image"
    assert not set(real) & leak_setup["val"]
    assert not {e[1] for e in syn} & leak_setup["forbidden_syn"]
    assert not {e[2] for e in syn} & leak_setup["val"]
    if name != "mixup":                            # mixup trains on float blends: checked by the log
        assert seen and not set(seen) & leak_setup["bad_pix"] and set(seen) <= leak_setup["good_pix"]
    sj = yaml.safe_load((cfg.run_dir / "fold0" / "synthetic.json").read_text())
    assert sj == counts
    report = (cfg.run_dir / "report.md").read_text()          # the run's report states the counts
    assert f"| 0 | 288 | {counts['used']} | {counts['excluded']} |" in report
    assert f"Strategy `{name}`" in report


# ---------------------------------------------------------------- pair strategies under DDP
def _ddp_pair_step(rank: int, world: int, port: int, name: str, out: str) -> None:
    """One SGD step of ``name`` on rank-specific batches under gloo DDP; save the updated weights."""
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    net = tiny_net().train()                              # same initial weights on every rank
    model = DDP(net)
    cfg = load_config(None, [f"synthetic.strategy={name}"])
    s = MIXING_STRATEGIES.get(name)(cfg, None, 0)
    g = torch.Generator().manual_seed(100 + rank)         # each rank gets different data
    x = torch.randint(0, 255, (4, 8, 16, 16), generator=g, dtype=torch.uint8)
    y = (torch.rand(4, 56, generator=g) < 0.2).float()
    torch.manual_seed(rank)                               # lambda draws differ per rank too
    loss = s.batch_loss(model, torch.nn.functional.binary_cross_entropy_with_logits, x, y)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("name", ["mix_representation", "mix_loss"])
def test_pair_strategies_synchronise_gradients_under_ddp(name, tmp_path):
    """Two gloo ranks on different batches end the step with identical weights: the loss goes
    through the DDP wrapper's forward, so its gradient all-reduce runs (calling the unwrapped
    module's ``features``/``head`` left each rank with its own gradients)."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_pair_step, args=(2, port, name, str(tmp_path)), nprocs=2, join=True)
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    start = tiny_net().state_dict()
    moved = [k for k in w0 if w0[k].is_floating_point() and not torch.equal(w0[k], start[k])]
    assert moved, "the step changed no weight"
    for k in w0:
        if w0[k].is_floating_point() and "running" not in k:   # BatchNorm statistics stay local
            assert torch.allclose(w0[k], w1[k], atol=1e-6), k


def tiny_net():
    """The ``test_resnet`` classifier with seed-0 weights (what every DDP rank starts from)."""
    from hpa.models import build_model
    torch.manual_seed(0)
    return build_model(load_config(None, ["model.name=test_resnet"]).model)


def test_rare_sampling_weights_by_the_rarest_label():
    from hpa.synthetic.mixing.strategies import pool_weights
    real_y = np.zeros((10, 28))
    real_y[:, 0] = 1                       # class 0 on all 10 real images, class 1 on 2, class 2 on none
    real_y[:2, 1] = 1
    pool_y = np.zeros((4, 28))
    pool_y[0, 0] = pool_y[1, [0, 1]] = pool_y[2, 1] = pool_y[3, 2] = 1
    w = pool_weights(pool_y, real_y, "rare")
    # rarest-label counts: 10, 2, 2, 1 (an absent class counts as 1) -> weights 1/10, 1/2, 1/2, 1
    assert w == pytest.approx(np.array([0.1, 0.5, 0.5, 1.0]) / 2.1)
    assert pool_weights(pool_y, real_y, "uniform") is None


def test_rare_sampling_draws_rare_pool_images_more():
    cfg = load_config(None, ["synthetic.strategy=global_replace", "synthetic.p=1.0", "synthetic.sample=rare"])
    # tiny_pool: every synthetic image carries class 20; put it on all 6 real images too, and give
    # synthetic images 2 and 3 class 0 as well (on 1 real image)
    real2, y2, ids2, pool2 = tiny_pool()
    pool2.y[2:, 0] = 1
    y2[:, 20] = 1
    s2 = MIXING_STRATEGIES.get("global_replace")(cfg, pool2, 0)
    ds2, _ = s2.wrap_train(real2, y2, ids2)
    drawn = [v for e in range(20) for v in values(ds2, e)]
    share = np.mean([v in (102, 103) for v in drawn])
    assert s2.weights == pytest.approx(np.array([1 / 6, 1 / 6, 1, 1]) / (2 + 1 / 3))
    assert share > 0.75                                   # 6/7 expected, 1/2 when uniform
    with pytest.raises(HPAError, match="'synthetic.sample' must be one of uniform, rare, got 'often'"):
        load_config(None, ["synthetic.strategy=concat", "synthetic.sample=often", "synthetic.manifests=[x]"])
