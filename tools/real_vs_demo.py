#!/usr/bin/env python
"""Draw the EDA figures of the real samples beside the demo's, and measure how close the two are.

    python tools/real_vs_demo.py --real ../shared/hpa/real-samples/kaggle --demo input/demo --out docs/figures

Writes ``real_contact_sheet.png``, ``demo_contact_sheet.png``, ``real_vs_demo_stains.png`` (pooled
pixel-value histogram per stain), ``real_vs_demo_classes.png`` (share of images per label, with the
real train.csv) and ``real_vs_demo.json`` + ``.md`` (per-stain intensity medians, the earth mover's
distance between the histograms, labels per image). Both datasets are compared at the demo's image
size (real images resized with area interpolation, as the cache does); contact sheets are low
resolution on purpose (they show the images, they are no copy of them).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from hpa.classes import LABELS_PER_IMAGE, TRAIN_ROWS
from hpa.data.images import CHANNELS
from hpa.data.labels import read_labels
from hpa.io import write_json, write_text
from hpa.reports import eda


def measure(folder: Path, size: int, n: int) -> dict:
    """Labels, intensity stats and stain histograms of the first ``n`` training images of a dataset."""
    labels = read_labels(folder / "train.csv").head(n)
    ids = labels["Id"].tolist()
    return {"labels": labels, "stats": eda.intensity_stats(folder / "train", ids, size),
            "hist": eda.stain_histograms(folder / "train", ids, size)}


def labels_per_image(labels: pd.DataFrame) -> dict[str, float]:
    """Share of images with 1, 2, 3, 4+ labels."""
    n = labels["labels"].map(len)
    return {str(k): round(float((n == k).mean() if k < 4 else (n >= 4).mean()), 3) for k in (1, 2, 3, 4)}


def summary(real: dict, demo: dict, size: int) -> dict:
    """The numbers of the README subsection (JSON-ready)."""
    med = {name: eda.intensity_summary(d["stats"]).round(3) for name, d in (("real", real), ("demo", demo))}
    real_lpi = {str(k): round(LABELS_PER_IMAGE.get(k, 0) / TRAIN_ROWS, 3) for k in (1, 2, 3)}
    real_lpi["4"] = round(sum(v for k, v in LABELS_PER_IMAGE.items() if k >= 4) / TRAIN_ROWS, 3)
    return {
        "size": size, "n_real": len(real["labels"]), "n_demo": len(demo["labels"]),
        "stains": {c: {"real": med["real"].loc[c].to_dict(), "demo": med["demo"].loc[c].to_dict(),
                       "earth_movers_distance": round(float(d), 2)}
                   for c, d in zip(CHANNELS, eda.histogram_distance(real["hist"], demo["hist"]))},
        "labels_per_image": {"real samples": labels_per_image(real["labels"]),
                             "demo": labels_per_image(demo["labels"]), "real train.csv": real_lpi},
        "classes_present": {"real samples": int((eda.class_table(real["labels"])["count"] > 0).sum()),
                            "demo": int((eda.class_table(demo["labels"])["count"] > 0).sum())},
    }


def markdown(s: dict) -> str:
    """The summary as two markdown tables."""
    lines = [f"Real samples ({s['n_real']}) vs demo ({s['n_demo']} images), both at {s['size']} px; "
             "medians over images of each per-image figure.", "",
             "| stain | mean real / demo | std real / demo | p99 real / demo | zero pixels real / demo | "
             "earth mover's distance (grey levels) |", "|---|---|---|---|---|---|"]
    for c, v in s["stains"].items():
        r, d = v["real"], v["demo"]
        lines.append(f"| {c} | {r['mean']:.1f} / {d['mean']:.1f} | {r['std']:.1f} / {d['std']:.1f} | "
                     f"{r['p99']:.0f} / {d['p99']:.0f} | {r['zero_share']:.2f} / {d['zero_share']:.2f} | "
                     f"{v['earth_movers_distance']:.1f} |")
    lines += ["", "| labels per image | 1 | 2 | 3 | 4+ |", "|---|---|---|---|---|"]
    for name, v in s["labels_per_image"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v[k]:.2f}" for k in ("1", "2", "3", "4")) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", required=True, help="Kaggle-layout folder of the real samples (train.csv, train/)")
    p.add_argument("--demo", required=True, help="demo dataset folder (hpa demo-data)")
    p.add_argument("--out", default="docs/figures")
    p.add_argument("--size", type=int, default=0, help="compare at this size (default: the demo's)")
    p.add_argument("--n", type=int, default=400, help="at most this many images of each dataset")
    p.add_argument("--sheet", type=int, default=32, help="images per contact sheet")
    args = p.parse_args(argv)
    real_dir, demo_dir, out = Path(args.real), Path(args.demo), Path(args.out)
    demo_ids = read_labels(demo_dir / "train.csv")["Id"]
    size = args.size or int(eda.read_kaggle_rgby(demo_dir / "train", demo_ids.iat[0]).shape[0])
    real, demo = measure(real_dir, size, args.n), measure(demo_dir, size, args.n)
    for name, folder, d in (("real", real_dir, real), ("demo", demo_dir, demo)):
        eda.plot_contact_sheet(folder / "train", d["labels"], args.sheet, 8, 56,
                               f"{name}: first {min(args.sheet, len(d['labels']))} training images "
                               "(RGBY composite, 56 px), titled by Target", out / f"{name}_contact_sheet.png")
    eda.plot_stain_histograms({f"real samples ({len(real['labels'])})": real["hist"],
                               f"demo ({len(demo['labels'])})": demo["hist"]},
                              f"pixel values at {size} px", out / "real_vs_demo_stains.png")
    eda.plot_class_shares({"real samples": real["labels"], "demo": demo["labels"]},
                          path=out / "real_vs_demo_classes.png")
    s = summary(real, demo, size)
    write_json(out / "real_vs_demo.json", s)
    write_text(out / "real_vs_demo.md", markdown(s))
    print(markdown(s))
    print(f"real vs demo: {s['n_real']} real and {s['n_demo']} demo images at {size} px -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
