"""Rewrite the README's generated blocks from the registries (``hpa list --markdown``).

A block sits between ``<!-- hpa list: begin -->`` and ``<!-- hpa list: end -->``; everything between
the markers is replaced. ``tests/test_registries.py`` fails while the README is stale, naming this
tool. Usage: ``python tools/readme_lists.py [README.md]``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from hpa.catalog import markdown
from hpa.errors import HPAError
from hpa.io import write_text

BEGIN, END = "<!-- hpa list: begin -->", "<!-- hpa list: end -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def rewrite(text: str) -> str:
    """``text`` with the marked block replaced by the current table; HPAError without the markers."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise HPAError(f"README: no '{BEGIN}' ... '{END}' block")
    return text[:start + len(BEGIN)] + "\n" + markdown() + text[stop:]


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else README
    old = path.read_text()
    new = rewrite(old)
    if new != old:
        write_text(path, new)
    print(f"{path}: {'rewritten' if new != old else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
