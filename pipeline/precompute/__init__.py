"""The precompute job (decode every video once, write motion cell maps to Parquet shards).

Moved here from pipeline/precompute.py; `from pipeline.precompute import X` keeps working.
"""

from pipeline.precompute.job import *  # noqa: F401,F403
from pipeline.precompute.job import _kernel  # noqa: F401
