"""The kaggle package client shared by ``hpa download`` (:mod:`hpa.kaggle.download`) and ``hpa submit``
(:mod:`hpa.kaggle.submit`): credentials, masking, the authenticated client.

Credentials (``~/.kaggle/kaggle.json``, or ``KAGGLE_USERNAME`` + ``KAGGLE_KEY``, or
``KAGGLE_API_TOKEN``) are checked here before the kaggle package is imported: its import prints a long
authentication banner, so it is imported lazily with its output captured. No credential value is ever
printed or logged; client errors are passed on with any credential value masked.
The client is injectable (anything with ``competition_download_files`` and ``competition_submit``),
which is how the tests run without a network.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping

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
                   "with chmod 600, or set KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY")


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


def describe_error(e: BaseException) -> str:
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
        raise HPAError(f"kaggle authentication failed: {describe_error(e)}") from None
    return api
