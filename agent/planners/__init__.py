"""Planners: the offline systematic researcher (:mod:`agent.planners.offline`) and the prompts every
planner gets (:mod:`agent.planners.prompts`).

Every planner is an LLM backend (``complete(system=, messages=, tools=) -> LLMResponse``): ``claude``
and ``replay`` live in :mod:`agent.llm`, ``offline`` here. They all drive the same loop
(:mod:`agent.graph`), so their runs are logged, reported and replayed the same way.
"""
