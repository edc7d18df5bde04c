"""Planners built on the run log or on rules, behind the one LLM-backend interface:

- ``offline`` (:mod:`agent.planners.offline`, rules in :mod:`agent.planners.rules`): the deterministic
  systematic researcher;
- ``replay`` (:mod:`agent.planners.replay`): a run's logged LLM turns, fed back;
- :mod:`agent.planners.recording`: a wrapper that logs each call of another backend;
- :mod:`agent.planners.prompts`: the system prompt and the per-component brief every planner gets.

``claude`` lives in :mod:`agent.llm`. Every planner is an LLM backend (``complete(system=, messages=,
tools=) -> LLMResponse``) driving the same loop (:mod:`agent.graph`), so their runs are logged, reported
and replayed the same way.
"""
