"""Progressive resizing (train.resize_schedule): the size of each epoch, the config checks, a tiny
2-epoch run that trains at both sizes from both caches, and --resume after epoch 1 at the second size."""
import numpy as np
import pandas as pd
import pytest

from hpa.config import load_config
from hpa.errors import HPAError
from hpa.training import loop as loop_mod
from hpa.training import run
from hpa.training.resize import schedule_sizes, size_at

PROBS = [f"p{c}" for c in range(28)]


@pytest.fixture(scope="module")
def cfg_path(tiny_experiment, tmp_path_factory):
    return tiny_experiment(tmp_path_factory.mktemp("resize"), 3,
                           {"epochs": 2, "batch_size": 16, "num_workers": 0, "threads": 1, "log_with": "none",
                            "resize_schedule": [[0, 24], [1, 32]], "augment": [{"name": "hflip"}]})


def test_size_of_each_epoch():
    schedule = [[0, 256], [10, 384], [20, 512]]
    assert [size_at(schedule, 512, e) for e in (0, 9, 10, 19, 20, 39)] == [256, 256, 384, 384, 512, 512]
    assert schedule_sizes(schedule, 512) == [256, 384, 512]
    assert size_at([], 96, 5) == 96 and schedule_sizes([], 96) == [96]


@pytest.mark.parametrize("sets, problem", [
    (["train.resize_schedule=[[1, 32]]"], "epochs must start at 0 and increase"),
    (["train.resize_schedule=[[0, 32], [0, 64]]"], "epochs must start at 0 and increase"),
    (["train.resize_schedule=[[0, 32, 1]]"], r"needs \[epoch, size\] pairs"),
    (["train.resize_schedule=[[0, 4]]"], "sizes must be >= 8"),
    (["train.resize_schedule=[[0, 32]]", "train.crop_from=96"], "train.crop_from"),
    (["train.resize_schedule=[[0, 32]]", "synthetic.strategy=concat"], "synthetic strategy"),
])
def test_bad_schedules_are_refused(sets, problem):
    with pytest.raises(HPAError, match=rf"train.resize_schedule.*{problem}"):
        load_config(None, sets)


def test_two_sizes_in_one_run_and_resume_at_the_second(cfg_path, monkeypatch, capsys):
    a = load_config(cfg_path, ["name=a"])
    run(a, [0])
    hist = pd.read_csv(a.run_dir / "fold0" / "history.csv")
    assert hist["image_size"].tolist() == [24, 32]
    assert "fold 0 epoch 2: image size 32 px" in capsys.readouterr().out
    caches = sorted(p.name.split("_")[1] for p in (a.run_dir.parents[1] / "cache").glob("kaggle_*.npy"))
    assert caches == ["24", "32"]                         # one cache per size, both used

    sizes = []
    original = loop_mod.make_loaders

    def spy(train, image_size, data, seed, cuda, strategy=None, images=None):
        sizes.append(np.asarray(images[0]).shape[0])
        return original(train, image_size, data, seed, cuda, strategy, images)
    monkeypatch.setattr(loop_mod, "make_loaders", spy)
    save = loop_mod.FoldTrainer.save_epoch

    def save_then_stop(self, *args):
        save(self, *args)
        if self.epoch == 1:
            raise KeyboardInterrupt
    b = load_config(cfg_path, ["name=b"])
    with monkeypatch.context() as m:
        m.setattr(loop_mod.FoldTrainer, "save_epoch", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            run(b, [0])
    assert sizes == [24]
    sizes.clear()
    run(b, [0], resume=True)
    assert sizes == [24, 32]                              # built at 24, rebuilt at 32 for epoch 2
    assert pd.read_csv(b.run_dir / "fold0" / "history.csv")["image_size"].tolist() == [24, 32]
    np.testing.assert_allclose(pd.read_csv(a.run_dir / "oof.csv")[PROBS], pd.read_csv(b.run_dir / "oof.csv")[PROBS],
                               atol=1e-6)
