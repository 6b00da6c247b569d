#!/usr/bin/env python
"""Benchmark one-shot learning methods on Omniglot: `python run_benchmark.py --methods all`.

All the work is in benchmark/cli.py; this file only makes the command runnable from a checkout.
"""

import sys

from benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
