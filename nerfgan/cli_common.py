"""Options shared by the three entry points (``nerfgan``, ``nerfgan-export``, ``nerfgan-run``): one spelling each.

* ``-o/--out`` names every output; the old long spellings (``--output``, ``--json``) still work, hidden from --help;
* ``--teacher`` / ``--student`` name the two checkpoints; ``--ckpt`` still works, hidden, for one release;
* ``--dry-run`` prints the resolved settings as JSON and exits 0 before any heavy work;
* ``--version`` prints nerfgan.__version__;
* ``--device auto|cpu|cuda``, resolved by :func:`resolve_device` when the command runs.

Imports click only (the commands' --help stays fast).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click

import nerfgan
from nerfgan.errors import UsageError

SEED_MAX = 2**32 - 1  # numpy RandomState seeds, as upstream


class AliasOption(click.Option):
    """An option whose ``hidden_names`` (old spellings) are accepted but left out of --help."""

    def __init__(self, *args: Any, hidden_names: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden_names = tuple(hidden_names)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        opts, secondary = self.opts, self.secondary_opts
        self.opts = [o for o in opts if o not in self.hidden_names]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts, self.secondary_opts = opts, secondary

    def get_error_hint(self, ctx: click.Context | None) -> str:
        return " / ".join(f"'{o}'" for o in self.opts if o not in self.hidden_names)


def out_option(dest: str, help: str, old: Sequence[str] = ("--output",), **kwargs: Any) -> Callable[[Any], Any]:
    """``-o/--out`` into parameter ``dest``; the ``old`` long names keep working, hidden from --help."""
    return click.option("-o", "--out", *old, dest, cls=AliasOption, hidden_names=tuple(old), help=help, **kwargs)


def checkpoint_option(which: str, dest: str, help: str, **kwargs: Any) -> Callable[[Any], Any]:
    """``--teacher`` or ``--student`` (``which``) into ``dest``; ``--ckpt`` keeps working, hidden, for one release."""
    return click.option(f"--{which}", "--ckpt", dest, cls=AliasOption, hidden_names=("--ckpt",), help=help, **kwargs)


def dry_run_option(help: str = "Print the resolved settings as JSON and exit; write nothing.") -> Callable[[Any], Any]:
    return click.option("--dry-run", is_flag=True, help=help)


def version_option(prog_name: str) -> Callable[[Any], Any]:
    return click.version_option(nerfgan.__version__, "--version", prog_name=prog_name,
                                message="%(prog)s %(version)s")


def resolve_device(name: str) -> str:
    """--device: 'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without one is a UsageError."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return name


DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                      help="Where to run.")


def echo_json(settings: dict[str, Any]) -> None:
    """The --dry-run answer: the resolved settings as indented JSON on stdout."""
    click.echo(json.dumps(settings, indent=1, default=str))


class SeedType(click.ParamType):
    """A latent / sample seed: an integer in 0..``hi`` (a bad value names the range, not a float bound)."""

    name = "integer"

    def __init__(self, hi: int = SEED_MAX) -> None:
        self.hi = hi

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        v: int | None
        try:
            v = value if isinstance(value, int) and not isinstance(value, bool) else int(str(value).strip(), 10)
        except ValueError:
            v = None
        if v is None or not 0 <= v <= self.hi:
            self.fail(f"the seed must be an integer in 0..{self.hi}, got {value!r}", param, ctx)
        return v

    def __repr__(self) -> str:
        return f"SeedType(0..{self.hi})"


SEED = SeedType()
