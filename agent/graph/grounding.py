"""The loop's grounding check of ``conclude_component`` (:func:`evals.grounding.check_claim` on the log so far).

A conclusion that fails the check — numbers no cited result gives, invalid evidence (a seq that does not
exist, is not a successful experiment, or concerns another component the explanation does not name), no
citation, or a role without a supported hypothesis tested on held-out data — is not recorded the first
time: the planner gets a tool error listing exactly which numbers, seqs and hypotheses fail, and an
``error`` event (``where`` = :data:`WHERE`) logs it. The planner may fix it (rewrite it, or run the missing
held-out test first); its next ``conclude_component`` for the component is recorded as it is, and what is
still ungrounded counts in the run's grounding score.
"""

from __future__ import annotations

from agent.actions import ConcludeComponent
from agent.state import RunContext
from agent.view import RunView
from evals.grounding import Claim, ClaimCheck, check_claim

WHERE = "grounding.conclude_component"
"""``where`` of the ``error`` event logging a conclusion sent back by the grounding check."""


def check_conclusion(ctx: RunContext, component: str, tool: ConcludeComponent) -> ClaimCheck:
    """The grounding of a conclusion not logged yet, against the events logged so far."""
    events = ctx.log.events()[: ctx.journal.position]
    view = RunView.from_events(events, ctx.log.run_dir)
    return check_claim(Claim(component=component, role=tool.role, explanation=tool.explanation,
                             evidence=list(tool.evidence)), view.record())


def sent_back(ctx: RunContext, component: str) -> int:
    """How many conclusions of ``component`` the check has sent back so far."""
    return sum(1 for e in ctx.log.events()[: ctx.journal.position]
               if e.kind == "error" and e.where == WHERE and e.component == component)


def rejection(component: str, check: ClaimCheck) -> str:
    """The tool error for a conclusion sent back."""
    lines = [f"conclusion of {component} NOT recorded: its grounding check failed:"]
    lines += [f"- {p}" for p in check.problems]
    lines.append("Fix the explanation or the evidence (or first run the held-out test the role needs) and call "
                 "conclude_component again. You get one retry: the next conclusion is recorded as it is, and what "
                 "is still ungrounded counts against the run.")
    return "\n".join(lines)


def note(check: ClaimCheck) -> str:
    """What a recorded conclusion still lacks ('' when grounded)."""
    if check.grounded:
        return ""
    return " Grounding problems (this conclusion counts as ungrounded): " + " ".join(
        f"({i}) {p}" for i, p in enumerate(check.problems, 1))
