"""The `sqlora` command: `sqlora ask ...`, `sqlora compare ...`; each subcommand is a module of
this package with its own `main(argv)`."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "ask": ("sqlora.ask", "ask a SQLite database a question in plain words"),
    "compare": ("sqlora.compare", "compare two runs question by question"),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:10} {about}" for name, (_, about) in COMMANDS.items()]
        print("usage: sqlora COMMAND [options]\n\ncommands:\n" + "\n".join(lines))
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    module = importlib.import_module(COMMANDS[argv[0]][0])
    module.main(argv[1:])


if __name__ == "__main__":
    main()
