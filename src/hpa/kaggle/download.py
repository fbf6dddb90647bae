"""``hpa download``: the competition data through the kaggle package (or, with ``--hpav18``, the HPAv18
images through :mod:`hpa.external.download`), unpacked and checked."""
from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hpa.data.cache import missing_files_error
from hpa.data.images import CHANNELS
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.external import download as hpav18
from hpa.kaggle import client as kaggle_client
from hpa.kaggle.client import COMPETITION, describe_error
from hpa.submission import read_sample_ids


def _safe_extract(zip_path: Path, dest: Path) -> int:
    """Extract a zip into ``dest`` with a progress bar, refusing members that escape it; return count."""
    dest_resolved = dest.resolve()
    with zipfile.ZipFile(zip_path) as zf:
        members = zf.infolist()
        for m in members:
            target = (dest / m.filename).resolve()
            if target != dest_resolved and dest_resolved not in target.parents:
                raise HPAError(f"{zip_path}: member '{m.filename}' would be written outside {dest}")
        for m in tqdm(members, desc=f"unpack {zip_path.name}", leave=False):
            zf.extract(m, dest)
    return len(members)


def check_layout(root: str | Path) -> dict[str, int]:
    """Check a Kaggle-layout folder: every train.csv / sample_submission.csv Id has its 4 channel PNGs.

    Returns ``{"train_ids", "test_ids", "train_pngs", "test_pngs"}``; HPAError counts the missing files
    and names the first few.
    """
    root = Path(root)
    counts = {}
    for split, ids in (("train", read_labels(root / "train.csv")["Id"].tolist()),
                       ("test", read_sample_ids(root / "sample_submission.csv"))):
        folder = root / split
        present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        missing = [(i, f"{i}_{c}.png") for i in tqdm(ids, desc=f"check {split}", leave=False)
                   for c in CHANNELS if f"{i}_{c}.png" not in present]
        if missing:         # every missing file counted in one line: one re-download is enough
            raise missing_files_error(folder, [n for _, n in missing], f"missing image ({split} Id "
                                      f"{missing[0][0]})", f"missing images of {split} Ids")
        counts[f"{split}_ids"] = len(ids)
        counts[f"{split}_pngs"] = sum(1 for n in present if n.endswith(".png"))
    return counts


def download_competition(dest: str | Path = "input/hpa", client: Any = None,
                         competition: str = COMPETITION) -> dict[str, int]:
    """Download the competition zip into ``dest``, unpack it (and inner train/test zips), check the layout.

    Returns the :func:`check_layout` counts. ``client`` defaults to an authenticated KaggleApi.
    """
    dest = Path(dest)
    client = client or kaggle_client.default_client()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        client.competition_download_files(competition, path=str(dest), quiet=True)
    except HPAError:
        raise
    except Exception as e:  # network / permission errors from the client, credentials masked
        raise HPAError(f"kaggle download of '{competition}' failed: {describe_error(e)}") from None
    zips = sorted(dest.glob("*.zip"))
    if not zips:
        raise HPAError(f"{dest}: the download produced no zip file")
    for z in zips:
        _safe_extract(z, dest)
        z.unlink()
    for split in ("train", "test"):  # some mirrors ship train.zip / test.zip inside the main zip
        inner = dest / f"{split}.zip"
        if inner.is_file():
            _safe_extract(inner, dest / split)
            inner.unlink()
    return check_layout(dest)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa download``."""
    p.add_argument("--out", help="destination folder (default: input/hpa; input/hpav18 with --hpav18)")
    p.add_argument("--competition", default=COMPETITION, help="competition slug")
    hpav18.add_arguments(p)


def main(args: argparse.Namespace) -> int:
    """Download, unpack and check the competition data (or, with --hpav18, the HPAv18 images)."""
    if args.hpav18:
        return hpav18.main(args)
    args.out = args.out or "input/hpa"
    c = download_competition(args.out, competition=args.competition)
    print(f"{args.out}: {c['train_ids']} train Ids ({c['train_pngs']} PNGs), {c['test_ids']} test Ids "
          f"({c['test_pngs']} PNGs); layout OK")
    return 0
