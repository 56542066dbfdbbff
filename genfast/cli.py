"""The ``genfast`` command line: ``genfast <command> [options]``.

Each command lives in its own module, which exposes ``register(subparsers)``: it adds its
subparser and sets ``handler`` (a function of the parsed arguments returning the exit status).
A new command (``train``, ``sample``) is a new module and one more line in COMMANDS.
"""
from __future__ import annotations

import argparse
import importlib

import genfast

COMMANDS = (
    "genfast.benchmark.command",  # genfast bench
    "genfast.commands.train",  # genfast train
    "genfast.commands.sample",  # genfast sample
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genfast", description="Fast PyTorch ops for generative image models.")
    parser.add_argument("--version", action="version", version=f"genfast {genfast.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs ``genfast`` with ``argv`` (default: sys.argv[1:]) and returns its exit status.

    Bad arguments exit through argparse (SystemExit with status 2 and a message on stderr).
    """
    args = build_parser().parse_args(argv)
    return args.handler(args)
