"""``hpa bench``: each hot path timed against its natural baseline in one process, as ratios.

Rows (``hpa list bench-row``, in their registered ``order``): 1 data loading, 2 training step,
3 inference TTA x folds, 4 thresholds, 5 folds, 6 generation samplers, 7 GPU training at 512 px
(CUDA only), 8 embedding (``hpa embed`` vs a bare forward of the same foundation backbone), 9 the
hand-written pieces against their libraries.
"""
from hpa.bench.cli import add_arguments, main, run_bench
from hpa.bench.core import ROWS, BenchContext, load_rows

load_rows()                             # every *_rows module files its rows in ROWS

__all__ = ["add_arguments", "main", "run_bench", "load_rows", "ROWS", "BenchContext"]
