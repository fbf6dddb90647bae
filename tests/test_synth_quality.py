"""Distribution metrics (hpa.synthetic.quality) and the report's verdict on known feature sets."""
from __future__ import annotations

import numpy as np
import pytest

from hpa.synthetic import quality
from hpa.synthetic.quality import class_summary, per_class_quality
from hpa.synthetic.verdict import markdown, verdict, verdict_rows


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(120, 8))


def test_fid_known_values(x):
    assert quality.fid(x, x) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0] + [0.0] * 6)
    assert quality.fid(x, x + shift) == pytest.approx(5.0, rel=1e-6)        # same covariance: |shift|^2
    c = x - x.mean(0)                                                       # N(0, S) vs N(0, 4S): tr(S)
    assert quality.fid(c, 2 * c) == pytest.approx(np.trace(np.cov(c.T)), rel=1e-6)


def test_kid_is_the_unbiased_cubic_mmd(x):
    y = x[:60] + 0.5
    a = x[:60]
    kern = lambda u, v: (u @ v.T / u.shape[1] + 1) ** 3          # noqa: E731
    n = len(a)
    kaa, kyy, kay = kern(a, a), kern(y, y), kern(a, y)
    want = ((kaa.sum() - np.trace(kaa)) + (kyy.sum() - np.trace(kyy))) / (n * (n - 1)) - 2 * kay.mean()
    mean, sd = quality.kid(a, y, subset_size=n, subsets=3)      # every subset is the whole set
    assert mean == pytest.approx(want, rel=1e-6) and sd == pytest.approx(0.0, abs=1e-9)
    assert quality.kid(a, y, seed=1) == quality.kid(a, y, seed=1)         # seeded subsets


def test_precision_recall_known_values(x):
    assert quality.precision_recall(x, x) == (1.0, 1.0)
    assert quality.precision_recall(x, x + 100) == (0.0, 0.0)
    real = np.arange(10.0)[:, None]              # k=1 radii: 1 around every real point
    fake = np.array([[0.5], [100.0]])            # one inside, one far; fake radii 99.5 cover all real
    assert quality.precision_recall(real, fake, k=1) == (0.5, 1.0)
    with pytest.raises(ValueError, match="one D"):
        quality.precision_recall(x, x[:, :3])


def test_matched_floor_and_control(x):
    rng = np.random.default_rng(1)
    same = rng.normal(size=(200, 8))
    far = rng.normal(size=(200, 8)) + 3
    res = quality.matched(x, same, {"control": far}, repeats=2)
    assert res["n_per_set"] == 60 and res["repeats"] == 2
    assert set(res) == {"n_per_set", "repeats", "floor", "synthetic", "control"}
    assert res["control"]["fid"][0] > 10 * res["synthetic"]["fid"][0]
    assert res["control"]["precision"][0] < 0.2 < res["synthetic"]["precision"][0]
    again = quality.matched(x, same, {"control": far}, repeats=2)
    assert again == res                                                    # deterministic


def test_per_class_quality_sees_label_consistency(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 6
    real_labels = [[c] for c in (0, 1, 2) for _ in range(30)] + [[5]] * 4
    syn_labels = [[c] for c in (0, 1, 2) for _ in range(30)] + [[5]] * 4
    real = np.array([centres[ls[0]] if ls[0] < 3 else np.zeros(8) for ls in real_labels]) + rng.normal(size=(94, 8))
    syn = np.array([centres[ls[0]] if ls[0] < 3 else np.zeros(8) for ls in syn_labels]) + rng.normal(size=(94, 8))
    per = per_class_quality(real, real_labels, syn, syn_labels, min_images=10, repeats=2)
    assert [c for c, p in enumerate(per) if p] == [0, 1, 2]                # class 5: 4 images, too few
    assert per[0]["n_real"] == 30 and per[0]["n_synthetic"] == 30
    summary = class_summary(per)
    assert summary["n_classes"] == 3 and summary["closer_than_control"]["fid"] == 3
    assert summary["control"]["fid"] > 5 * summary["synthetic"]["fid"]
    assert class_summary([None, None]) == {"n_classes": 0}
    from hpa.synthetic.report import _plot_per_class_quality
    _plot_per_class_quality(per, tmp_path / "q.png")
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"


def _result(**kw):
    res = {"macro_f1": 0.15, "shuffled_control_f1": 0.075, "real_heldout_f1": 0.3, "per_class_f1": [None] * 28,
           "memorization_cosine_mean": 0.86, "memorization_cosine_max": 0.96, "share_above_0.95": 0.002,
           "real_heldout_memorization": {"mean": 0.88, "max": 0.97, "share_above_0.95": 0.01},
           "judge": "runs/demo fold 0", "quality_reference": "153 held-out"}
    return res | kw


def test_verdict_sentences_and_table():
    q = {"n_per_set": 76, "repeats": 5, "synthetic": {m: [2.0, 0.1] for m in quality.METRICS},
         "floor": {m: [1.0, 0.1] for m in quality.METRICS}}
    res = _result(quality=q)
    text = verdict(res)
    assert text[0].startswith("**Label-consistent**: agreement 0.150 is 2.0x the shuffled-label control and 50%")
    assert text[1] == ("**Fidelity**: FID 2.00 against a real-vs-real floor of 1.00 (2.0x); precision 2.00 "
                       "(floor 1.00).")
    assert "no closer to the training images than real held-out images are" in text[-1]
    rows = verdict_rows(res)
    assert rows[0] == ("label agreement (macro F1 of the judge)", "0.150", "0.300", "0.075")
    assert rows[1] == ("FID, 76 vs 76 images", "2.00 ± 0.10", "1.00 ± 0.10", "—")
    assert len(rows) == 6 and rows[-1][0].startswith("memorisation")
    md = markdown(res, "T")
    assert md.startswith("# T\n") and "| metric | synthetic | real vs real (floor) | shuffled-label control |" in md
    assert verdict(_result(macro_f1=0.08))[0].startswith("**Not label-consistent**")


@pytest.mark.slow
def test_inception_features_from_a_local_state_dict(tmp_path):
    import torch
    import torchvision

    from hpa.data.images import write_kaggle_rgby
    from hpa.errors import HPAError
    from hpa.synthetic.report import inception_features
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(net.state_dict(), tmp_path / "inception.pth")
    rng = np.random.default_rng(0)
    for i in ("a", "b"):
        write_kaggle_rgby(tmp_path / "img", i, rng.integers(0, 255, (16, 16, 4), dtype=np.uint8))
    f = inception_features(tmp_path / "img", ["a", "b"], tmp_path / "inception.pth", size=75)
    assert f.shape == (2, 2048) and np.isfinite(f).all()
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(HPAError, match="not a torchvision inception_v3 state dict"):
        inception_features(tmp_path / "img", ["a"], tmp_path / "bad.pth", size=75)
