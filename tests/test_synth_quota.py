"""--balance-to / --per-class: which label sets a quota run plans, how multi-label sets count, and the
manifest's record of it (end to end through the CLI with the stand-in generator)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hpa.cli import run_command
from hpa.errors import HPAError
from hpa.synthetic.manifest import read_manifest
from hpa.synthetic.modes import ModeOptions
from hpa.synthetic.protocol import Generator
from hpa.synthetic.quota import Quota, class_counts, plan_quota


class _Planner(Generator):
    """The base class's planner (job i from seed + i), nothing else."""
    kind, modes = "planner", ("noise",)

    @classmethod
    def train(cls, cfg, fold, out_dir):
        raise NotImplementedError

    def __call__(self, opts, jobs, load_sources):
        raise NotImplementedError


def _rows(targets: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"Id": [f"r{i}" for i in range(len(targets))], "Target": targets,
                         "labels": [[int(t) for t in s.split()] for s in targets]})


ROWS = _rows(["0"] * 10 + ["1"] * 3 + ["1 2"] * 2)       # real counts: class 0: 10, 1: 5, 2: 2


def _plan(quota: Quota, seed: int = 7):
    return plan_quota(_Planner(None, {}), ROWS, ModeOptions(), quota, seed, "g-f0", False, 0.5)


def test_balance_to_counts_every_label_of_a_set():
    jobs, planned_for, rec = _plan(Quota("balance_to", 6))
    # class 2 (2 rows) comes first and needs 4: its only label set is "1 2", so class 1 rises 5 -> 9 and
    # then needs nothing; class 0 has 10; classes without a training row cannot be reached
    assert [j.labels for j in jobs] == [[1, 2]] * 4 and set(planned_for.values()) == {2}
    assert rec["real"][:3] == [10, 5, 2] and rec["synthetic"][:3] == [0, 4, 4] and rec["total"][:3] == [10, 9, 6]
    assert rec["planned_for"][:3] == [0, 0, 4] and rec["images"] == 4 and len(rec["unreachable"]) == 25
    assert rec["counting"] == "an image counts toward every class of its label set"
    assert [j.seed for j in jobs] == [7, 8, 9, 10]                     # image i still has seed + i
    assert jobs[0].id == "syn-g-f0-c2-noise-000007"
    assert [j.id for j in _plan(Quota("balance_to", 6))[0]] == [j.id for j in jobs]      # deterministic
    high = _plan(Quota("balance_to", 12))[2]
    assert min(t for t, r in zip(high["total"], high["real"]) if r) >= 12


def test_per_class_plans_n_per_reachable_class():
    jobs, planned_for, rec = _plan(Quota("per_class", 3))
    assert rec["planned_for"][:3] == [3, 3, 3] and rec["images"] == 9
    for j in jobs:                                       # every label set is a real one carrying its class
        assert planned_for[j.id] in j.labels and " ".join(map(str, j.labels)) in set(ROWS["Target"])
    assert len({j.id for j in jobs}) == 9 and [j.seed for j in jobs] == list(range(7, 16))
    assert class_counts([[0, 1], [1], [1, 1]]).tolist()[:2] == [1, 3]
    with pytest.raises(HPAError, match="--per-class: 0 must be at least 1"):
        Quota("per_class", 0)


def test_cli_balance_to_writes_planned_for_and_plan_json(tmp_path, make_random_dataset):
    root = tmp_path / "data"
    make_random_dataset(root, 20, 16, ["0"] * 12 + ["1 2"] * 4 + ["3"] * 4, 4)
    common = ["--config", "configs/synth/standin_demo.yaml", "--fold", "0", "--set", f"data.root={root}",
              "--set", f"models_dir={tmp_path}/m"]
    assert run_command("synth", ["train", *common]) == 0
    out = tmp_path / "bal"
    assert run_command("synth", ["generate", *common, "--balance-to", "6", "--out", str(out)]) == 0
    man = read_manifest(out / "manifest.csv")
    plan = json.loads((out / "plan.json").read_text())
    # fold 0 held out (every 4th image): training rows have class 0: 9, "1 2": 3, 3: 3
    assert plan["real"][:4] == [9, 3, 3, 3] and plan["total"][:4] == [9, 6, 6, 6] and plan["images"] == 6
    assert man["planned_for"].astype(int).tolist() == [1, 1, 1, 3, 3, 3]
    assert np.array_equal(class_counts(list(man["labels"]))[:4], [0, 3, 3, 3])
    assert run_command("synth", ["generate", *common, "--balance-to", "6", "--out", str(out)]) == 0
    assert len(read_manifest(out / "manifest.csv")) == 6                          # rerun: nothing new
    assert run_command("synth", ["generate", *common, "--balance-to", "6", "--n", "3"]) == 2
