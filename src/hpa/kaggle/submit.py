"""``hpa submit``: validate a submission against the sample submission, then send it to Kaggle."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hpa.cli_args import add_file
from hpa.errors import HPAError
from hpa.kaggle import client as kaggle_client
from hpa.kaggle.client import COMPETITION, describe_error
from hpa.submission import sample_from_args, validate_submission


def submit(path: str | Path, message: str, sample: str | Path, client: Any = None,
           competition: str = COMPETITION) -> dict[str, float]:
    """Validate ``path`` against ``sample`` and submit it with ``message``; return the validation summary."""
    summary = validate_submission(path, sample)
    client = client or kaggle_client.default_client()
    try:
        client.competition_submit(str(path), message, competition)
    except Exception as e:
        raise HPAError(f"kaggle submit failed: {describe_error(e)}") from None
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa submit``."""
    add_file(p, "submission", "submission CSV")
    p.add_argument("-m", "--message", required=True, help="submission description")
    p.add_argument("--sample", help="sample submission to check against (default: data.sample_submission "
                   "of --config, else input/hpa/sample_submission.csv)")
    p.add_argument("--config", help="experiment YAML naming the sample submission")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--competition", default=COMPETITION, help="competition slug")


def main(args: argparse.Namespace) -> int:
    """Validate then submit a submission file; print one line."""
    sample = sample_from_args(args, default="input/hpa/sample_submission.csv")
    s = submit(args.submission, args.message, sample, competition=args.competition)
    print(f"{args.submission}: valid ({s['rows']} rows), submitted to {args.competition}")
    return 0
