"""``hpa demo-data``: the thin CLI over ``hpa.demo.dataset.make_demo_dataset`` and, with ``--external``,
``hpa.demo.external.make_external_demo`` (kept apart from both so neither imports the other)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hpa.demo.dataset import make_demo_dataset
from hpa.errors import HPAError
from hpa.demo.external import MIN_N, make_external_demo


def add_arguments(p) -> None:
    """Options of ``hpa demo-data``."""
    p.add_argument("--out", default="input/demo", help="dataset folder to create (default input/demo)")
    p.add_argument("--n-train", type=int, default=800, help="train images (default 800)")
    p.add_argument("--n-test", type=int, default=200, help="test images (default 200)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    p.add_argument("--min-per-class", type=int, default=10,
                   help="every class appears at least this often in train, a quarter of it in test")
    p.add_argument("--no-contact-sheet", action="store_true", help="skip contact_sheet.png")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    p.add_argument("--external", type=int, metavar="N",
                   help="also write an HPAv18-style folder of N samples with planted duplicates "
                        "(<out>/hpav18/, hpav18.csv, hpav18_planted.csv); added to an existing --out")


def main(args) -> int:
    """Run ``hpa demo-data``: write the dataset and print a one-line summary."""
    external = getattr(args, "external", None)
    if external is not None and external < MIN_N:      # before the Kaggle-layout dataset is written
        raise HPAError(f"--external: must be an integer >= {MIN_N}, got {external}")
    if external is not None and (Path(args.out) / "train.csv").is_file() and not args.overwrite:
        return _main_external(args)      # a demo dataset is there: add the external folder only
    s = make_demo_dataset(args.out, n_train=args.n_train, n_test=args.n_test, size=args.size,
                          seed=args.seed, min_per_class=args.min_per_class,
                          contact_sheet=not args.no_contact_sheet, overwrite=args.overwrite)
    rarest = int(np.argmin(s["train_class_counts"]))
    print(f"demo dataset: {s['n_train']} train + {s['n_test']} test images of {s['size']} px in "
          f"{s['out']} ({s['multi_label_train']} multi-label; rarest class {rarest} x"
          f"{s['train_class_counts'][rarest]}) in {s['seconds']:.1f}s")
    return _main_external(args) if external is not None else 0


def _main_external(args) -> int:
    e = make_external_demo(args.out, args.external, seed=args.seed, overwrite=args.overwrite)
    p = e["planted"]
    print(f"demo HPAv18 folder: {e['n']} samples in {e['folder']} ({e['short_names']} under the server's "
          f"short name; sides {', '.join(map(str, e['sizes']))} px); planted twins of {p['twin_train']} train, "
          f"{p['twin_test']} test and {p['twin_external']} external images, {p['decoy_same_cells']} + "
          f"{p['decoy_dim_green']} decoys (hpav18_planted.csv) in {e['seconds']:.1f}s")
    return 0
