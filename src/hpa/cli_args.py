"""Flags shared by the commands, so every command spells them the same way.

- A run is addressed by ``--run runs/<exp>`` (the run folder; its saved ``config.yaml``) or by
  ``--config configs/<exp>.yaml`` (the experiment; its run folder is ``<runs_dir>/<name>``), in every
  command that reads or adds to a run: :func:`add_run`, then :func:`hpa.rundir.experiment` (the config)
  or :func:`hpa.rundir.run_folder` (the folder).
- A file a command works on is given either way, ``hpa validate X`` or ``hpa validate --submission X``:
  :func:`add_file`.
- A renamed flag keeps working for one release, with one ``warning:`` line: :func:`add_renamed`.

:func:`finish` (called by :func:`hpa.cli.run_command` after parsing) resolves the two spellings of a file. Nothing
here imports more than ``argparse``, so ``hpa --help`` stays instant.
"""
from __future__ import annotations

import argparse
import warnings
from typing import Any

_FLAG = "__flag"                        # dest suffix of the --name spelling of a positional file


def add_run(p: argparse.ArgumentParser | Any, required: bool = True,
            config_help: str = "experiment YAML of the run (configs/<exp>.yaml)") -> None:
    """``--run RUN_FOLDER`` or ``--config YAML`` (one of them; ``p`` may be a mutually exclusive group
    that holds other choices too, as ``infer --ensemble``)."""
    group = p if isinstance(p, argparse._MutuallyExclusiveGroup) else \
        p.add_mutually_exclusive_group(required=required)
    group.add_argument("--run", help="run folder (runs/<exp>): the run's saved config.yaml")
    group.add_argument("--config", help=config_help)


def add_file(p: argparse.ArgumentParser, name: str, help: str) -> None:
    """A file given as a positional argument or as ``--<name>`` (the same value either way)."""
    p.add_argument(name, nargs="?", help=f"{help} (or --{name})")
    p.add_argument(f"--{name}", dest=name + _FLAG, metavar=name.upper(), help=f"{help} (or positional)")


class _Renamed(argparse.Action):
    """An old flag's spelling: stores into the new flag's dest and warns once per use."""

    def __init__(self, option_strings, dest, new: str = "", **kw):
        super().__init__(option_strings, dest, **kw)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        warnings.warn(f"{option_string} is renamed {self.new} (the old name goes in the next release)",
                      FutureWarning, stacklevel=2)
        setattr(namespace, self.dest, values)


def add_renamed(p: argparse.ArgumentParser | Any, old: str, new: str, dest: str, **kw: Any) -> None:
    """Accept ``old`` as a hidden alias of the flag ``new`` (stored in ``dest``) with a deprecation line."""
    p.add_argument(old, dest=dest, action=_Renamed, new=new, help=argparse.SUPPRESS, **kw)


def finish(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Merge the two spellings of every :func:`add_file` argument (``parser.error`` when both disagree or
    neither is given); return ``args``."""
    for key in [k for k in vars(args) if k.endswith(_FLAG)]:
        name, flag = key[:-len(_FLAG)], getattr(args, key)
        delattr(args, key)
        given = getattr(args, name)
        if given is not None and flag is not None and given != flag:
            parser.error(f"{name} given twice ({given} and --{name} {flag})")
        if given is None and flag is None:
            parser.error(f"the following arguments are required: {name} (or --{name})")
        setattr(args, name, given if given is not None else flag)
    return args
