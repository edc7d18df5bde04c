"""The research loop as a LangGraph ``StateGraph``.

::

    START → frame ─┬─────────────────────────────┬→ localise ─┬─→ start_component → step ⟲ → end_component ─┐
                   └→ design_start → design ⟲ ─┴→ END        └──────(no components)──→ cluster → report → END

    (end_component goes on to the next start_component, or to cluster after the last component)

* **frame**: the question as a task (see :mod:`agent.framing`); done before the run starts by
  :mod:`agent.run`, so this node only fills it in when the graph is driven directly.
* **design_start**, **design** (:mod:`agent.graph.design`): when the framing says the LLM planner designs the
  task, a framing sub-loop: Claude proposes task specs (generic kinds) and checks them on the model in the
  sandbox until one passes (then localise, on that task) or its framing budget ends (then END, ``error``).
* **localise** (:mod:`agent.graph.localise`): the ``--circuit``, or a patching + zero-ablation sweep and a
  redundancy check.
* **step** (:mod:`agent.graph.step`): one planner turn for the current component; its tool calls go
  through the handler table :data:`agent.graph.step.HANDLERS`. The loop repeats until the component is
  concluded, the planner stops, or a budget limit is reached. An LLM failure that survives the retries
  raises :class:`agent.state.RunPaused` (the run stops as ``interrupted``; ``resume`` re-runs the node).
* **end_component**: a component without a conclusion gets one: ``inconclusive`` with the reason
  (``budget``, ``no conclusion``...); plus a ``budget`` event with the counters.
* **cluster**: components grouped by function: by the LLM planner in one logged call, else by normalised
  role label (the offline planner's labels come from evidence signatures); each cluster is named and
  explained (see :mod:`agent.graph.nodes`).
* **report**: ``run_finished``, then ``report.md`` in the run dir, derived from the log only.

Nodes are small functions ``(state, runtime) -> partial state``; the backend, sandbox and log come in
through :class:`agent.state.RunContext` (LangGraph runtime context), never globals. Every event goes
through the :class:`agent.state.Journal`, so a node re-run after a kill re-uses what it had logged.

>>> g = build_graph()
>>> sorted(n for n in g.get_graph().nodes if not n.startswith("__"))
['cluster', 'design', 'design_start', 'end_component', 'frame', 'localise', 'report', 'start_component', 'step']
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from agent.graph.design import design, design_start, route_design, route_frame
from agent.graph.localise import localise
from agent.graph.nodes import INCONCLUSIVE, cluster, end_component, frame, report, start_component
from agent.graph.step import HANDLERS, NUDGE, step
from agent.state import ResearchState, RunContext

__all__ = ["HANDLERS", "INCONCLUSIVE", "NUDGE", "build_graph"]


def route_step(state: ResearchState) -> str:
    if state.get("concluded") or state.get("limit_hit"):
        return "end_component"
    return "step"


def route_components(state: ResearchState) -> str:
    if state.get("index", 0) < len(state.get("components") or []):
        return "start_component"
    return "cluster"


def build_graph(checkpointer: Any = None) -> Any:
    """The compiled research graph (``checkpointer``: e.g. a ``SqliteSaver``; None for none)."""
    g = StateGraph(ResearchState, context_schema=RunContext)
    for name, fn in [("frame", frame), ("design_start", design_start), ("design", design), ("localise", localise),
                     ("start_component", start_component), ("step", step), ("end_component", end_component),
                     ("cluster", cluster), ("report", report)]:
        g.add_node(name, fn)
    g.add_edge(START, "frame")
    g.add_conditional_edges("frame", route_frame, ["design_start", "localise"])
    g.add_edge("design_start", "design")
    g.add_conditional_edges("design", route_design, ["design", "localise", END])
    g.add_conditional_edges("localise", route_components, ["start_component", "cluster"])
    g.add_edge("start_component", "step")
    g.add_conditional_edges("step", route_step, ["step", "end_component"])
    g.add_conditional_edges("end_component", route_components, ["start_component", "cluster"])
    g.add_edge("cluster", "report")
    g.add_edge("report", END)
    return g.compile(checkpointer=checkpointer)
