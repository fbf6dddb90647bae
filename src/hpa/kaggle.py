"""``hpa download`` and ``hpa submit``: the competition data and submissions through the kaggle package.

Credentials (``~/.kaggle/kaggle.json``, or ``KAGGLE_USERNAME`` + ``KAGGLE_KEY``, or
``KAGGLE_API_TOKEN``) are checked here before the kaggle package is imported: its import prints a long
authentication banner, so it is imported lazily with its output captured. No credential value is ever
printed or logged; client errors are passed on with any credential value masked.
The client is injectable (anything with ``competition_download_files`` and ``competition_submit``),
which is how the tests run without a network.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

from tqdm import tqdm

from hpa.cli_args import add_file
from hpa.data.images import CHANNELS
from hpa.errors import HPAError

COMPETITION = "human-protein-atlas-image-classification"
_SECRET_VARS = ("KAGGLE_KEY", "KAGGLE_API_TOKEN")


def credentials_source(env: Mapping[str, str] | None = None, config_dir: str | Path | None = None) -> str:
    """Return where Kaggle credentials come from (a description, never a value); HPAError if none."""
    env = os.environ if env is None else env
    if env.get("KAGGLE_API_TOKEN"):
        return "environment (KAGGLE_API_TOKEN)"
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return "environment (KAGGLE_USERNAME, KAGGLE_KEY)"
    folder = Path(config_dir or env.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    if (folder / "kaggle.json").is_file():
        return str(folder / "kaggle.json")
    raise HPAError(f"no Kaggle credentials: put kaggle.json (from kaggle.com > Settings > API) in {folder}/ "
                   "with chmod 600, or set KAGGLE_USERNAME and KAGGLE_KEY")


def _secrets() -> list[str]:
    """Credential values to mask: the secret env vars and the key in kaggle.json (never printed)."""
    values = [os.environ.get(v, "") for v in _SECRET_VARS]
    path = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle") / "kaggle.json"
    try:
        values.append(str(json.loads(path.read_text()).get("key", "")))
    except (OSError, ValueError, AttributeError):
        pass
    return [v for v in values if len(v) >= 4]


def _mask(text: str) -> str:
    """Replace any credential value that appears in ``text`` by ``***``."""
    for value in _secrets():
        text = text.replace(value, "***")
    return text


def _describe(e: BaseException) -> str:
    """First line of an exception message, credentials masked (the type name when it is empty)."""
    text = _mask(str(e)).strip()
    return text.splitlines()[0] if text else type(e).__name__


def default_client() -> Any:
    """Return an authenticated ``KaggleApi``, importing it quietly (its banner is swallowed)."""
    credentials_source()
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            from kaggle.api.kaggle_api_extended import KaggleApi
            api = KaggleApi()
            api.authenticate()
    except (Exception, SystemExit) as e:  # the package exits on bad credentials
        raise HPAError(f"kaggle authentication failed: {_describe(e)}") from None
    return api


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
    from hpa.data.labels import read_labels
    from hpa.submission import read_sample_ids

    from hpa.data.cache import missing_files_error

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
    client = client or default_client()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        client.competition_download_files(competition, path=str(dest), quiet=True)
    except HPAError:
        raise
    except Exception as e:  # network / permission errors from the client, credentials masked
        raise HPAError(f"kaggle download of '{competition}' failed: {_describe(e)}") from None
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


def submit(path: str | Path, message: str, sample: str | Path, client: Any = None,
           competition: str = COMPETITION) -> dict[str, float]:
    """Validate ``path`` against ``sample`` and submit it with ``message``; return the validation summary."""
    from hpa.submission import validate_submission

    summary = validate_submission(path, sample)
    client = client or default_client()
    try:
        client.competition_submit(str(path), message, competition)
    except Exception as e:
        raise HPAError(f"kaggle submit failed: {_describe(e)}") from None
    return summary


def add_download_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa download``."""
    from hpa.external import download as hpav18

    p.add_argument("--out", help="destination folder (default: input/hpa; input/hpav18 with --hpav18)")
    p.add_argument("--competition", default=COMPETITION, help="competition slug")
    hpav18.add_arguments(p)


def main_download(args: argparse.Namespace) -> int:
    """Download, unpack and check the competition data (or, with --hpav18, the HPAv18 images)."""
    if args.hpav18:
        from hpa.external import download as hpav18
        return hpav18.main(args)
    args.out = args.out or "input/hpa"
    c = download_competition(args.out, competition=args.competition)
    print(f"{args.out}: {c['train_ids']} train Ids ({c['train_pngs']} PNGs), {c['test_ids']} test Ids "
          f"({c['test_pngs']} PNGs); layout OK")
    return 0


def add_submit_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa submit``."""
    add_file(p, "submission", "submission CSV")
    p.add_argument("-m", "--message", required=True, help="submission description")
    p.add_argument("--sample", help="sample submission to check against (default: data.sample_submission "
                   "of --config, else input/hpa/sample_submission.csv)")
    p.add_argument("--config", help="experiment YAML naming the sample submission")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--competition", default=COMPETITION, help="competition slug")


def main_submit(args: argparse.Namespace) -> int:
    """Validate then submit a submission file; print one line."""
    from hpa.submission import sample_from_args

    sample = sample_from_args(args, default="input/hpa/sample_submission.csv")
    s = submit(args.submission, args.message, sample, competition=args.competition)
    print(f"{args.submission}: valid ({s['rows']} rows), submitted to {args.competition}")
    return 0
