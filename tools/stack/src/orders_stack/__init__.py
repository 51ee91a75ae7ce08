"""The order tracking stack as local processes, for `make up` and for the tests.

Nothing here is imported by a service; the tests and the Makefile use it.
"""

from .services import Stack
from .stack import Infra, free_port

__all__ = ["Infra", "Stack", "free_port"]
