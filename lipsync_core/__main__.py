"""Command line: ``python -m lipsync_core <command> ...``.

Each command lives in ``lipsync_core/commands/<name>.py`` (dashes as underscores) with ``HELP``,
``add_arguments(parser)`` and ``main(args) -> int``; modules are imported only when their command runs.
"""

import argparse
import importlib
import sys

COMMANDS = ("init", "run", "convert", "plan", "gpu-check", "prep", "train", "train-motion", "toy")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m lipsync_core", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name in COMMANDS:
        if chosen is not None and name != chosen:
            subparsers.add_parser(name)
            continue
        try:
            module = importlib.import_module(f"{__package__}.commands.{_module(name)}")
        except ModuleNotFoundError as error:
            if error.name != f"{__package__}.commands.{_module(name)}":
                raise
            continue
        module.add_arguments(subparsers.add_parser(name, help=module.HELP, description=module.HELP))
    args = parser.parse_args(argv)
    module = importlib.import_module(f"{__package__}.commands.{_module(args.command)}")
    return int(module.main(args) or 0)


def _module(command: str) -> str:
    return command.replace("-", "_")  # train-motion lives in commands/train_motion.py


if __name__ == "__main__":
    sys.exit(main())
