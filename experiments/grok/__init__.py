"""The `dmft grok` job: grokking as a lazy-to-rich transition in theory and networks."""

from .config import FULL, SCHEMA, TESTBEDS, Testbed, build, load_config
from .job import decay_scan, phase_diagram, run

__all__ = ["SCHEMA", "FULL", "TESTBEDS", "Testbed", "load_config", "build", "run", "phase_diagram",
           "decay_scan"]
