"""interp-agent: the research loop, planners, run log, reports and CLI."""

__version__ = "0.1.0"
