"""The interchangeability heat map: ordered by the agent's clusters, reference beside it, in md + html reports."""

from __future__ import annotations

import base64

from agent.log import ConclusionEvent, EvaluationEvent, RunFinishedEvent, RunLog, RunStartedEvent
from agent.report.interchange_figure import interchange_figure, interchange_text, ordered

DETAILS = {
    "interchange": {"components": ["L0H0", "L0H1", "L1H0", "L1H1"], "version": "v2",
                    "I_sym": [[None, 0.9, 0.0, 0.1], [0.9, None, 0.0, 0.0], [0.0, 0.0, None, 0.8],
                              [0.1, 0.0, 0.8, None]]},
    "agent_clusters": {"movers": ["L1H1", "L1H0"], "prev": ["L0H1"]},
    "reference_clusters": {"prev": ["L0H0", "L0H1"], "movers": ["L1H0", "L1H1"]},
}


def test_order_follows_clusters_and_puts_the_unclustered_last():
    order, bounds = ordered(DETAILS["interchange"]["components"], DETAILS["agent_clusters"])
    assert order == ["L1H1", "L1H0", "L0H1", "L0H0"] and bounds == [2, 3]
    assert ordered(["L0H0", "L0H1"], None) == (["L0H0", "L0H1"], [])


def test_heat_map_is_a_png_and_text_shows_the_blocks():
    fig = interchange_figure(DETAILS, source_seq=7)
    assert fig is not None and fig.kind == "interchange" and fig.source_seq == 7
    assert "v2" in fig.title and "reference" in fig.title
    assert base64.b64decode(fig.png_b64)[:8] == b"\x89PNG\r\n\x1a\n"
    text = interchange_text(DETAILS).splitlines()
    assert text[1].split() == ["L1H1", "L1H0", "|", "L0H1", "|", "L0H0"]
    assert text[2].split() == ["L1H1", "·", "0.80", "|", "0.00", "|", "0.10"]
    assert interchange_figure({"scores": {}}) is None and interchange_text({}) is None


def test_report_shows_the_latest_evaluation_heat_map(tmp_path):
    from agent.report import build_summary, render_html, render_markdown

    log = RunLog(tmp_path / "r")
    log.append(RunStartedEvent(run_id="r", question="q?", model="toy-ioi", planner="offline"))
    log.append(ConclusionEvent(component="L1H0", role="name mover", explanation="e", confidence=0.7))
    log.append(RunFinishedEvent(status="completed"))
    log.append(EvaluationEvent(evaluator="evals", scores={"ic_auc_agent": 1.0}, details=DETAILS))
    s = build_summary(tmp_path / "r")
    figs = [f for f in s.figures if f.kind == "interchange"]
    assert len(figs) == 1 and figs[0].source_seq == 3
    assert "Interchangeability I_sym (v2)" in render_markdown(s)
    assert figs[0].png_b64 in render_html(s)


def test_eval_command_prints_the_matrix_and_writes_the_png(tmp_path, monkeypatch):
    from agent.commands.eval import _show_interchange
    from agent.commands.output import STATE, console

    monkeypatch.setattr(STATE, "json", False)

    with console.capture() as cap:
        _show_interchange(DETAILS, tmp_path)
    out = cap.get()
    assert "I_sym ordered by the agent's clusters" in out and "interchange.png" in out
    assert (tmp_path / "interchange.png").read_bytes()[:4] == b"\x89PNG"
    _show_interchange({"scores": {}}, tmp_path / "none")  # no matrix: nothing printed, nothing written
    assert not (tmp_path / "none").exists()
    monkeypatch.setattr(STATE, "json", True)  # --json: the file is written, nothing printed
    (tmp_path / "j").mkdir()
    with console.capture() as cap:
        _show_interchange(DETAILS, tmp_path / "j")
    assert cap.get() == "" and (tmp_path / "j" / "interchange.png").is_file()
