"""One-shot learning benchmark harness for Omniglot."""

__version__ = "0.1.0"
