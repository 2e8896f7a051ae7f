"""python -m sqlora.eval: execution accuracy of a prediction file (see sqlora.eval.accuracy)."""

from ..core.errors import run_stage
from .accuracy import main

run_stage(main)
