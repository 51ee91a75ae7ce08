"""The old name of `orders_processor.commands.rebuild`, kept while tests/faults and the docs still
run `python -m orders_processor.rebuild`; remove once they name the command's module."""

import sys

from .commands.rebuild import NotFresh, Rebuilt, main, rebuild

__all__ = ["NotFresh", "Rebuilt", "main", "rebuild"]

if __name__ == "__main__":
    sys.exit(main())
