"""Sluice operators: composable, pure transformations of polars batches. Importing this package
registers every built-in operator."""

from operators import clean, dedup, quality  # noqa: F401  (registration side effect)
from operators import generate  # noqa: F401  (registration side effect)
from operators import diversity  # noqa: F401  (registration side effect)
from operators import tokens  # noqa: F401  (registration side effect)
from operators.registry import all_operators, get, register

__all__ = ["all_operators", "get", "register"]
