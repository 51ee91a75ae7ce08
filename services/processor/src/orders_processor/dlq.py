"""The old name of `orders_processor.commands.dlq`, kept while tests/faults and the docs still
import `orders_processor.dlq`; remove once they name the command's module."""

from .commands.dlq import DeadLetter, Filters, main, newest_of_chains, read_dead_letters, redrive, run

__all__ = ["DeadLetter", "Filters", "main", "newest_of_chains", "read_dead_letters", "redrive", "run"]

if __name__ == "__main__":
    main()
