"""``python -m benchmarks.harness`` (from the repository root): the same as bench_gradcam.py."""

import sys

from .cli import main

sys.exit(main())
