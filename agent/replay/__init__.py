"""Replay a logged investigation: re-execute its code and check every number (``--verify``,
:mod:`agent.replay.verify` with the tolerance rules of :mod:`agent.replay.compare`), re-run the whole
research loop on the logged LLM turns (``--planner-replay``, :mod:`agent.replay.planner`), or re-compute
attention patterns for a report (:mod:`agent.replay.attention`)."""

from agent.replay.compare import (
           ATOL,
           RTOL,
           Mismatch,
           compare_results,
           diff_values,
           numbers_close,
           texts_match,
)
from agent.replay.planner import PlannerReplayReport, compare_runs, planner_replay, tool_calls
from agent.replay.verify import (
           ReplayError,
           VerifyReport,
           check_artifacts,
           load_events,
           setup_cells_for,
           verify,
)

__all__ = ["ATOL", "RTOL", "Mismatch", "PlannerReplayReport", "ReplayError", "VerifyReport", "check_artifacts",
           "compare_results", "compare_runs", "diff_values", "load_events", "numbers_close", "planner_replay",
           "setup_cells_for", "texts_match", "tool_calls", "verify"]
