"""The `dmft dln` job: deep linear networks under SGD, per-mode theory against networks."""

from .config import FULL, SCHEMA, Study, build, load_config
from .job import checks, run

__all__ = ["SCHEMA", "FULL", "Study", "load_config", "build", "run", "checks"]
