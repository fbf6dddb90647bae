"""``hpa leak-report``: which HPAv18 images duplicate Kaggle train images, Kaggle test images, each other
(and, with ``--pretraining``, which Kaggle images a foundation model's pretraining set holds:
:mod:`hpa.external.pretraining`).

Hashes every image of Kaggle train, Kaggle test and the external set (:mod:`hpa.data.duplicates`:
green AND reference-stain phash, cached), links near-duplicates and writes into ``--out``:

* ``pairs.csv``: one row per linked pair (``source_a,id_a,source_b,id_b,green_bits,<ref>_bits``);
* ``duplicates.csv``: the duplicate groups over all three sources (``source,Id,group,group_size``);
* ``pairs.png``: example pairs side by side (RGB composites), each kind of pair in turn;
* ``summary.json``: the counts printed.

``--drop-test-duplicates OUT.csv`` writes the external label file without the external images in a
group with a Kaggle test image. The choice: such an image IS a test image, with its HPA label.
Training on it makes the model score better on those test images (the public and private
leaderboard reward it, and external data was allowed), but it is a leak: the score no longer
measures how the model does on images it has not seen, and the gain says nothing about new data.
Keep them to compete; drop them for an honest estimate or for a model meant for new images.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from hpa.cli_args import add_renamed
from hpa.config import load_config
from hpa.data.cache import IMAGE_READERS
from hpa.data.duplicates import ImageSource, find_duplicates, hash_images, near_pairs, write_groups
from hpa.data.images import to_rgb
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.external.hpav18 import FORMATS, folder_format, read_hpav18_labels, require_images
from hpa.external.pretraining import pretraining_report, summary_line
from hpa.io import read_csv, write_csv, write_json
from hpa.reports import new_figure, save_figure

ORDER = (("external", "test"), ("external", "train"), ("external", "external"), ("train", "test"),
         ("train", "train"), ("test", "test"))


def _kind_pairs(pairs: pd.DataFrame) -> pd.Series:
    """``"a-b"`` source pair of each link, sources in a fixed order (external before train before test)."""
    rank = {"external": 0, "train": 1, "test": 2}
    a, b = pairs["source_a"], pairs["source_b"]
    swap = a.map(rank) > b.map(rank)
    return a.where(~swap, b) + "-" + b.where(~swap, a)


def summarise(groups: pd.DataFrame, pairs: pd.DataFrame) -> dict:
    """The counts of the report: images per source, external images with a train / test / external
    twin, links per source pair, groups with more than one image."""
    ext = groups[groups["source"] == "external"]
    out = {"images": groups["source"].value_counts().to_dict(), "pairs": {}}
    kinds = _kind_pairs(pairs) if len(pairs) else pd.Series([], dtype=str)
    for a, b in ORDER:
        out["pairs"][f"{a}-{b}"] = int((kinds == f"{a}-{b}").sum())
    for other in ("train", "test", "external"):
        m = ((pairs["source_a"] == "external") & (pairs["source_b"] == other)) | \
            ((pairs["source_b"] == "external") & (pairs["source_a"] == other))
        ids = set(pairs["id_a"][m & (pairs["source_a"] == "external")]) | \
            set(pairs["id_b"][m & (pairs["source_b"] == "external")])
        out[f"external_duplicating_{other}"] = len(ids)
    test_groups = set(groups["group"][groups["source"] == "test"])
    out["external_in_test_groups"] = int(ext["group"].isin(test_groups).sum())
    out["groups_with_duplicates"] = int((groups.drop_duplicates("group")["group_size"] > 1).sum())
    return out


def compare_planted(pairs: pd.DataFrame, planted: pd.DataFrame) -> dict:
    """Check the links against the demo's planted twins: ``found`` of ``planted`` twins, ``false``
    links (any link that is not a planted twin, decoys included), and the decoys linked."""
    def key(sa, ia, sb, ib):
        return tuple(sorted([(sa, ia), (sb, ib)]))

    twins = planted[planted["kind"] == "twin"]
    expected = {key("external", i, s, t) for i, s, t in zip(twins["Id"], twins["twin_source"], twins["twin_id"])}
    links = {key(*r) for r in pairs[["source_a", "id_a", "source_b", "id_b"]].itertuples(index=False)}
    decoys = set(planted["Id"][planted["kind"] != "twin"])
    return {"planted": len(expected), "found": len(expected & links), "false": len(links - expected),
            "decoys_linked": sum(1 for k in links if any(s == "external" and i in decoys for s, i in k))}


def plot_pairs(pairs: pd.DataFrame, sources: dict[str, ImageSource], labels: dict[str, dict],
               path: str | Path, examples: int = 8, side: int = 128) -> Path:
    """Save a PNG with up to ``examples`` linked pairs side by side: the kinds of pair in turn
    (external-test, external-train, external-external, train-test, ...), closest pairs first."""
    order = {f"{a}-{b}": k for k, (a, b) in enumerate(ORDER)}
    shown = pairs.assign(_k=_kind_pairs(pairs).map(order)).sort_values(["_k", "green_bits"], kind="stable")
    shown = shown.assign(_r=shown.groupby("_k").cumcount()).sort_values(["_r", "_k"], kind="stable").head(examples)
    ref = next(c for c in pairs.columns if c.endswith("_bits") and c != "green_bits")
    rows = max(1, (len(shown) + 1) // 2)           # two pairs per row
    fig, axes = new_figure(8.4, 2.3 * rows, rows, 4)
    for k, (_, p) in enumerate(shown.iterrows()):
        r, c0 = k // 2, 2 * (k % 2)
        for c, (s, i) in enumerate(((p["source_a"], p["id_a"]), (p["source_b"], p["id_b"]))):
            src = sources[s]
            ax = axes[r, c0 + c]
            ax.imshow(to_rgb(IMAGE_READERS.get(src.kind)(src.image_dir, i, side)))
            ax.set_title(f"{s} {i[:18]}\nlabels {labels.get(s, {}).get(i, 'hidden')}", fontsize=6)
        axes[r, c0].set_ylabel(f"green {p['green_bits']}, {ref.split('_')[0]} {p[ref]} bits", fontsize=6)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.axis("off")
    if not len(shown):
        axes[0, 0].text(0.5, 0.5, "no duplicates found", ha="center", va="center")
    fig.suptitle("Near-duplicate pairs (phash of green and reference stain)", fontsize=9)
    save_figure(fig, path, dpi=75)
    return Path(path)


def leak_report(sources: Sequence[ImageSource], out: str | Path, threshold: int = 4, reference: str = "blue",
                cache_dir: str | Path | None = None, workers: int = 2, examples: int = 8,
                labels: dict[str, dict] | None = None, progress: bool = True) -> dict:
    """Hash, link and report; write ``pairs.csv``, ``duplicates.csv``, ``pairs.png`` and
    ``summary.json`` into ``out``; return the summary dict (plus the tables under ``_groups``, ``_pairs``)."""
    out = Path(out)
    groups, pairs = find_duplicates(sources, threshold, reference, cache_dir, workers, progress)
    summary = {"threshold": threshold, "reference": reference, **summarise(groups, pairs)}
    write_csv(out / "pairs.csv", pairs)
    write_groups(out / "duplicates.csv", groups)
    plot_pairs(pairs, {s.name: s for s in sources}, labels or {}, out / "pairs.png", examples)
    write_json(out / "summary.json", summary)
    return {**summary, "_groups": groups, "_pairs": pairs}


def drop_test_duplicates(external_labels: pd.DataFrame, groups: pd.DataFrame, path: str | Path) -> int:
    """Write ``external_labels`` (``Id,Target``) without the external images in a group with a Kaggle
    test image to ``path``; return how many were dropped."""
    test_groups = set(groups["group"][groups["source"] == "test"])
    ext = groups[groups["source"] == "external"]
    drop = set(ext["Id"][ext["group"].isin(test_groups)])
    keep = external_labels[~external_labels["Id"].isin(drop)]
    write_csv(path, keep[["Id", "Target"]])
    return len(external_labels) - len(keep)


# ----------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa leak-report``."""
    p.add_argument("--config", help="experiment YAML: data.root, train/test folders, data.external_* "
                   "(default: the built-in defaults, data.root input/demo)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--external-csv", help="HPAv18 label file (default data.external_csv)")
    p.add_argument("--external-dir", help="HPAv18 image folder, JPEG or PNG (default data.external_dir)")
    p.add_argument("--out", default="reports/leak", help="report folder (default reports/leak)")
    p.add_argument("--hash-distance", dest="threshold", type=int, metavar="BITS",
                   help="max phash Hamming distance per stain (default folds.hash_threshold)")
    add_renamed(p, "--threshold", "--hash-distance", dest="threshold", type=int)
    p.add_argument("--reference", choices=("blue", "red", "yellow"), default="blue",
                   help="stain hashed besides green to pin the field of view (default blue)")
    p.add_argument("--workers", type=int, default=4, help="hashing threads (default 4)")
    p.add_argument("--examples", type=int, default=8, help="pairs shown in pairs.png (default 8)")
    p.add_argument("--skip-missing", action="store_true", help="leave out HPAv18 Ids without images")
    p.add_argument("--drop-test-duplicates", metavar="CSV",
                   help="write the external label file without images that duplicate Kaggle test images")
    p.add_argument("--planted", metavar="CSV", help="check against known twins (the demo's hpav18_planted.csv)")
    p.add_argument("--pretraining", metavar="LIST",
                   help="a foundation model's pretraining list (Ids/file names, one a line or a CSV column) or "
                        "folder of its images: which Kaggle train/test images it holds, by Id and by image "
                        "(hpa.external.pretraining); alone, or with the HPAv18 report")


def main(args: argparse.Namespace) -> int:
    """``hpa leak-report``: print the counts, write the report files."""
    cfg = load_config(args.config, args.set)
    d, root = cfg.data, Path(cfg.data.root)
    ext_csv, ext_dir = args.external_csv or d.external_csv, args.external_dir or d.external_dir
    if args.pretraining:
        kaggle = [ImageSource("train", root / d.train_dir, read_labels(root / d.train_csv)["Id"].tolist()),
                  ImageSource("test", root / d.test_dir, read_csv(root / d.sample_submission, ["Id"])["Id"].tolist())]
        threshold = cfg.folds.hash_threshold if args.threshold is None else args.threshold
        s = pretraining_report(args.pretraining, kaggle, args.out, threshold, args.reference, d.cache_dir)
        print(summary_line(s) + f"; report in {args.out}/ (pretraining_ids.csv, pretraining.json)")
        if not (args.external_csv or args.external_dir):
            return 0
    if not ext_csv or not ext_dir:
        raise HPAError("hpa leak-report: give --external-csv and --external-dir (or data.external_csv/_dir)")
    train = read_labels(root / d.train_csv)
    test_ids = read_csv(root / d.sample_submission, ["Id"])["Id"].tolist()
    external = read_hpav18_labels(ext_csv)
    fmt = folder_format(ext_dir) or "jpg"
    kept = require_images(ext_csv, ext_dir, external["Id"].tolist(), args.skip_missing, fmt)
    if len(kept) < len(external):
        print(f"skipping {len(external) - len(kept)} of {len(external)} external Ids without images")
    sources = [ImageSource("train", root / d.train_dir, train["Id"].tolist()),
               ImageSource("test", root / d.test_dir, test_ids),
               ImageSource("external", ext_dir, kept, FORMATS[fmt])]
    threshold = cfg.folds.hash_threshold if args.threshold is None else args.threshold
    labels = {"train": dict(zip(train["Id"], train["Target"])),
              "external": dict(zip(external["Id"], external["Target"]))}
    s = leak_report(sources, args.out, threshold, args.reference, d.cache_dir, args.workers, args.examples, labels)
    n = s["images"]
    print(f"{n.get('external', 0)} external images: {s['external_duplicating_train']} duplicate a Kaggle train "
          f"image, {s['external_duplicating_test']} a Kaggle test image, {s['external_duplicating_external']} "
          f"another external image")
    print(f"Kaggle: {s['pairs']['train-train']} train-train and {s['pairs']['train-test']} train-test "
          f"duplicate pairs among {n.get('train', 0)} train and {n.get('test', 0)} test images; "
          f"{s['groups_with_duplicates']} groups of 2+; report in {args.out}/ (pairs.csv, duplicates.csv, pairs.png)")
    if args.planted:
        c = compare_planted(s["_pairs"], read_csv(args.planted, ["Id", "kind", "twin_source", "twin_id"]))
        green_only = _green_only_links(s["_groups"], sources, threshold, d.cache_dir, args.reference)
        print(f"planted twins found: {c['found']} of {c['planted']}; false matches: {c['false']} "
              f"(decoys linked: {c['decoys_linked']}; green-only hashing would link {green_only} pairs)")
        write_json(Path(args.out) / "planted.json", {**c, "green_only_links": green_only})
    if args.drop_test_duplicates:
        dropped = drop_test_duplicates(external[external["Id"].isin(kept)], s["_groups"], args.drop_test_duplicates)
        print(f"wrote {args.drop_test_duplicates}: {len(kept) - dropped} external Ids "
              f"({dropped} duplicating Kaggle test images dropped)")
    return 0


def _green_only_links(groups: pd.DataFrame, sources: Sequence[ImageSource], threshold: int,
                      cache_dir, reference: str) -> int:
    """How many links the green stain alone would make (cached hashes: no image is read again)."""
    h = np.concatenate([hash_images(s, ("green", reference), cache_dir, progress=False) for s in sources])
    return len(near_pairs(h[:, :1], threshold)[0])
