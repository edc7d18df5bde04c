"""The Jupyter notebook export (nbformat v4): the run as code a researcher can re-run top to bottom.

Layout: a title cell; a preamble cell (working directory, offline Hugging Face); the run's setup cells
(imports, model load by zoo name or path, the task batches) so the notebook is self-sufficient in a
fresh kernel; then every logged code cell in log order with its *logged* outputs (stdout, stderr, the
result, the error), with markdown cells between them for each hypothesis (proposed / supported /
refuted) and conclusion at the point of the log where it was recorded; clusters at the end.

Cells that raised in the run are tagged ``raises-exception`` so ``nbclient`` runs past them as Jupyter
does. A logged figure file is attached as a ``display_data`` PNG output when it exists.

>>> from agent.report.model import RunSummary, CellRecord
>>> s = RunSummary(run_id="r1", question="q?", setup_cells=["x = 1"],
...                cells=[CellRecord(seq=4, call="run_code", code="_result = {'y': x + 1}",
...                                  result={"status": "ok", "stdout": "hi\\n", "data": {"y": 2}})])
>>> nb = build_notebook(s)
>>> [c.cell_type for c in nb.cells]
['markdown', 'code', 'code', 'markdown', 'code']
>>> nb.cells[-1].outputs[0]["text"]
'hi\\n'
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from agent.report.model import RunSummary
from agent.report.render import fmt_num, grounding_md, key_numbers, marked_md
from agent.report.summary import read_run_file
from tools.errors import InterpAgentError


def _outputs(result: dict[str, Any], run_dir: Path | None) -> list[Any]:
    from nbformat.v4 import new_output

    outs = []
    if result.get("stdout"):
        outs.append(new_output("stream", name="stdout", text=result["stdout"]))
    if result.get("stderr"):
        outs.append(new_output("stream", name="stderr", text=result["stderr"]))
    if result.get("status") == "error":
        tb = result.get("traceback") or []
        tb = tb.splitlines() if isinstance(tb, str) else [str(t) for t in tb]
        outs.append(new_output("error", ename=result.get("error_name") or "Error",
                               evalue=result.get("error_value") or "", traceback=tb))
    elif result.get("status") in ("timeout", "died"):
        outs.append(new_output("stream", name="stderr", text=f"[cell {result['status']} in the run]\n"))
    for rel in result.get("outputs") or []:
        if run_dir is None or not str(rel).lower().endswith(".png"):
            continue
        png, _ = read_run_file(run_dir, rel)  # kernel-written: bounded, never through a link
        if png is not None:
            outs.append(new_output("display_data", data={"image/png": base64.b64encode(png).decode(),
                                                         "text/plain": f"<{rel}>"}))
    if result.get("result") is not None:
        outs.append(new_output("execute_result", data={"text/plain": str(result["result"])}, execution_count=None))
    elif result.get("data") is not None:
        outs.append(new_output("execute_result", data={"text/plain": json.dumps(result["data"], indent=1)[:20000]},
                               execution_count=None))
    return outs


def _preamble(s: RunSummary) -> str:
    lines = ["# Preamble added by the notebook export: offline Hugging Face, the run's workspace as cwd.",
             "import os", "os.environ.setdefault('HF_HUB_OFFLINE', '1')",
             "os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')"]
    if s.run_dir:
        ws = Path(s.run_dir) / "workspace"
        lines += [f"_ws = {str(ws)!r}", "if os.path.isdir(_ws) and os.access(_ws, os.W_OK):", "    os.chdir(_ws)"]
    return "\n".join(lines)


def build_notebook(s: RunSummary):
    """The notebook as an ``nbformat.NotebookNode`` (validated v4)."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    run_dir = Path(s.run_dir) if s.run_dir else None
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["interp_agent"] = {"run_id": s.run_id, "model": s.model, "seed": s.seed, "task": s.task}
    head = [f"# Investigation {s.run_id}", "", f"**Question:** {s.question or '—'}", "",
            f"**Task:** {s.task or '—'} · **Model:** {s.model or '—'} · **seed:** {s.seed} · "
            f"**planner:** {s.planner or '—'}", "",
            "Setup cells first, then every code cell the agent ran, in order, with the outputs *logged in the "
            "run*. Re-running the notebook re-computes them (`interp-agent replay RUN --verify` checks they agree)."]
    nb.cells.append(new_markdown_cell("\n".join(head)))
    nb.cells.append(new_code_cell(_preamble(s)))
    if not s.setup_cells:
        nb.cells.append(new_markdown_cell("_The log records no setup cells; the cells below may need the model "
                                          "and task defined first._"))
    for code in s.setup_cells:
        nb.cells.append(new_code_cell(code, metadata={"tags": ["setup"]}))

    # Markdown for hypotheses and conclusions, keyed by the seq they were logged at.
    notes: list[tuple[int, str]] = []
    for h in s.hypotheses:
        for st in h.steps:
            ev = f" (decided by experiments {', '.join(f'#{q}' for q in st.evidence)})" if st.evidence else ""
            notes.append((st.seq, f"**Hypothesis {h.id}** [{h.component}] — *{st.status}*{ev}: {h.statement}"
                          + (f"\n\nPrediction: {st.note}" if st.note else "")))
    for c in s.components:
        conf = f"{c.confidence:.2f}" if c.confidence is not None else "—"
        notes.append((c.seq if c.seq is not None else 10**9,
                      f"### Conclusion: {c.component} — {c.role}\n\nConfidence {conf}. {marked_md(c.pieces())}\n\n"
                      f"Key numbers: {key_numbers(c.numbers)}\n\nGrounded: {grounding_md(c.grounding)}"))
    notes.sort(key=lambda t: t[0])

    i = 0
    for cell in s.cells:
        while i < len(notes) and notes[i][0] < cell.seq:
            nb.cells.append(new_markdown_cell(notes[i][1]))
            i += 1
        status = cell.result.get("status", "ok")
        title = f"**Event #{cell.seq}** — `{cell.call}`" + (f" on `{cell.component}`" if cell.component else "")
        if status != "ok":
            title += f" (status in the run: {status})"
        nb.cells.append(new_markdown_cell(title))
        meta: dict[str, Any] = {"interp_agent": {"seq": cell.seq, "call": cell.call}}
        if status == "error":
            meta["tags"] = ["raises-exception"]
        code_cell = new_code_cell(cell.code, metadata=meta)
        code_cell.outputs = _outputs(cell.result, run_dir)
        nb.cells.append(code_cell)
    for _, text in notes[i:]:
        nb.cells.append(new_markdown_cell(text))
    if s.clusters:
        nb.cells.append(new_markdown_cell("## Clusters\n\n" + "\n".join(
            f"- **{c.name}**: {', '.join(c.members)}" + (f" — {c.explanation}" if c.explanation else "")
            for c in s.clusters)))
    if s.evaluation:
        nb.cells.append(new_markdown_cell("## Evaluation\n\n" + "\n".join(
            f"- {k}: {fmt_num(v) if isinstance(v, int | float) else v}" for k, v in s.evaluation.items())))
    nbformat.validate(nb)
    return nb


def write_notebook(s: RunSummary, run_dir: Path) -> Path:
    """Write ``report.ipynb`` into ``run_dir``; return its path."""
    import nbformat

    path = run_dir / "report.ipynb"
    nbformat.write(build_notebook(s), str(path))
    return path


def execute_notebook(path: str | Path, timeout_s: int = 600, sandbox_factory: Any = None, kernel: Any = None) -> Any:
    """Run a notebook's code cells top to bottom in a fresh *sandbox* (never a plain host kernel: the cells
    are the run's LLM-written code) and return it with the new outputs.

    Raises :class:`NotebookError` on the first cell that fails and is not tagged ``raises-exception``.
    ``sandbox_factory(workspace) -> Sandbox`` defaults to an isolated local sandbox that can read the
    run's model (:func:`agent.kernel.make_kernel`), with the run's device and GPUs when ``kernel`` (its
    logged :class:`agent.config.KernelOptions`) is given; without isolation it refuses
    (:class:`sandbox.errors.IsolationUnavailable`).
    """
    import shutil
    import tempfile

    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    model = (nb.metadata.get("interp_agent") or {}).get("model")
    if sandbox_factory is None:
        from agent.config import KernelOptions, SandboxKind
        from agent.kernel import make_kernel

        base = kernel or KernelOptions()
        opts = base.model_copy(update={"model": model or base.model, "sandbox": SandboxKind.LOCAL,
                                       "unsafe_no_isolation": False})

        def sandbox_factory(ws: Path) -> Any:
            return make_kernel(ws, [], opts)

    workspace = Path(tempfile.mkdtemp(prefix="report-execute-"))
    try:
        with sandbox_factory(workspace) as sb:
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                r = sb.execute(cell.source, timeout=timeout_s)
                res = r.model_dump(mode="json") if hasattr(r, "model_dump") else dict(r)
                res["outputs"] = []
                cell.outputs = _outputs(res, None)
                if res.get("status") != "ok" and "raises-exception" not in cell.metadata.get("tags", []):
                    raise NotebookError(f"notebook cell {i} failed in the sandbox ({res.get('status')}: "
                                        f"{res.get('error_name')}: {str(res.get('error_value'))[:500]})",
                                        fix="open the notebook at that cell; `interp-agent replay RUN --verify` "
                                            "compares every cell with the log")
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return nb


class NotebookError(InterpAgentError):
    """A notebook cell failed when the notebook was executed."""
