"""Build a small recorded run for the replay / report tests: real code cells executed in a real sandbox,
logged through :class:`agent.log.RunLog` exactly as the research loop logs them.

The cells use a tiny random-init GPT-2 saved on disk (no zoo, no hub), so the run takes a few seconds:
logits, a per-head "ablation" sweep by zeroing each head's slice of ``c_proj``'s input, an attention
pattern, a tensor repr (a memory address in its text), a cell that raises, and a matplotlib figure. The
``ablate`` and ``attention`` cells return data in the shape of their tools' result models
(``tools.experiments.AblationResult`` / ``AttentionResult``), as the real cells do.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from agent.log import (
    BudgetEvent,
    ClusterEvent,
    ConclusionEvent,
    EvaluationEvent,
    ExecutionResultEvent,
    HypothesisEvent,
    RunFinishedEvent,
    RunLog,
    RunStartedEvent,
    ToolCallEvent,
)


def setup_cells_for(model_dir: str) -> list[str]:
    return [
        "\n".join([
            "import os", "os.environ.setdefault('HF_HUB_OFFLINE', '1')",
            "import torch, json",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "torch.manual_seed(0)",
        ]),
        "\n".join([
            f"tok = AutoTokenizer.from_pretrained({model_dir!r}, local_files_only=True)",
            f"hf = AutoModelForCausalLM.from_pretrained({model_dir!r}, local_files_only=True, "
            "attn_implementation='eager').eval()",
            "prompts = ['w1 w2 w3 w4 w5 w1 w2', 'w6 w7 w8 w9 w10 w6 w7']",
            "ids = torch.tensor([tok(p)['input_ids'] for p in prompts])",
            "answer = torch.tensor([tok('w3')['input_ids'][0], tok('w8')['input_ids'][0]])",
            "def metric(logits):",
            "    return float(logits[torch.arange(len(answer)), -1, answer].mean())",
        ]),
    ]


SWEEP = """# ablate each head (zero its slice of c_proj's input) and measure the answer logit
def _ablated(layer, head):
    d = hf.config.n_embd // hf.config.n_head
    def pre(mod, args):
        x = args[0].clone()
        x[..., head * d:(head + 1) * d] = 0
        return (x,)
    h = hf.transformer.h[layer].attn.c_proj.register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            return metric(hf(ids).logits)
    finally:
        h.remove()
with torch.no_grad():
    _m0 = metric(hf(ids).logits)
_eff = {f"L{l}H{h}": _m0 - _ablated(l, h) for l in range(hf.config.n_layer) for h in range(hf.config.n_head)}
_result = {"clean": _m0, "effects": _eff}
print(f"clean metric {_m0:.6f}")"""

CELLS: list[tuple[str, str | None, str]] = [
    ("run_code", None, "with torch.no_grad():\n    _lg = hf(ids).logits\n"
                       "_result = {'metric': metric(_lg), 'top': _lg[0, -1].topk(3).indices.tolist()}\n_lg.shape"),
    ("attribution_sweep", None, SWEEP),
    ("attention", "L1H0", "with torch.no_grad():\n    _att = hf(ids, output_attentions=True).attentions\n"
                          "_result = {'head': 'L1H0', 'pattern': _att[1][0, 0].tolist(), "
                          "'tokens': tok.convert_ids_to_tokens(ids[0].tolist()), "
                          "'summary': {'head': 'L1H0', 'query': '-1', 'roles': {}, "
                          "'previous': float(_att[1][0, 0].diagonal(-1).mean()), 'first': float(_att[1][0, 0, -1, 0]), "
                          "'self': float(_att[1][0, 0].diagonal().mean())}}"),
    ("ablate", "L1H0", "print(object())\n_result = {'components': ['L1H0'], 'clean': _m0, 'gap': abs(_m0) + 1e-9, "
                       "'ablated': _m0 - _eff['L1H0'], 'effect': _eff['L1H0'], "
                       "'effect_frac': _eff['L1H0'] / (abs(_m0) + 1e-9)}"),
    ("run_code", "L1H0", "1 / 0"),
    ("run_code", None, "import io\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
                       "from IPython.display import Image, display\n"
                       "fig, ax = plt.subplots(figsize=(2, 2))\nax.plot([1, 2, 3])\n_buf = io.BytesIO()\n"
                       "fig.savefig(_buf, format='png')\nplt.close(fig)\ndisplay(Image(data=_buf.getvalue()))"),
]


def _event_fields(run_dir: Path, result: Any) -> dict[str, Any]:
    """ExecutionResult → ExecutionResultEvent fields: traceback as text, output files copied under
    ``figures/`` and logged relative to the run directory."""
    raw = result.model_dump(mode="json")
    tb = raw.get("traceback")
    raw["traceback"] = "\n".join(tb) if isinstance(tb, list) else tb
    outs = []
    for o in raw.get("outputs") or []:
        src = Path(o["path"] if isinstance(o, dict) else o)
        dst = run_dir / "figures" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        outs.append(str(dst.relative_to(run_dir)))
    raw["outputs"] = outs
    return raw


def record_run(run_dir: Path, model_dir: str) -> Path:
    """Execute :data:`CELLS` in a real sandbox and log them with hypotheses, conclusions and scores."""
    from sandbox import make_sandbox

    setup = setup_cells_for(model_dir)
    log = RunLog(run_dir)
    ws = run_dir / "workspace"
    ws.mkdir(parents=True, exist_ok=True)
    with make_sandbox(workspace=ws, setup_code=setup, unsafe_no_isolation=True) as sb:
        log.append(RunStartedEvent(run_id=run_dir.name, question="Which heads predict the repeated token?",
                                   task="toy-induction", model=model_dir, model_fingerprint="ab" * 32,
                                   planner="offline", seed=0, circuit=["L1H0", "L0H1"],
                                   config={"setup_cells": setup, "n_prompts": 2}, isolation=sb.isolation))
        seqs: list[int] = []
        for i, (call, comp, code) in enumerate(CELLS):
            cid = f"c{i}"
            log.append(ToolCallEvent(call_id=cid, name=call, input={"code": code} if call == "run_code" else
                                     {"components": [comp]} if comp else {}, component=comp))
            res = sb.execute(code, timeout=120)
            ev = log.append(ExecutionResultEvent(call_id=cid, code=code, component=comp,
                                                 **{k: v for k, v in _event_fields(run_dir, res).items()
                                                    if k in ExecutionResultEvent.model_fields and v is not None}))
            seqs.append(ev.seq)
            if i == 2:
                log.append(HypothesisEvent(component="L1H0", hypothesis_id="h1", status="proposed",
                                           statement="L1H0 attends to the previous token"))
        log.append(HypothesisEvent(component="L1H0", hypothesis_id="h1", status="refuted", evidence=[seqs[2]],
                                   statement="L1H0 attends to the previous token"))
        log.append(HypothesisEvent(component="L1H0", hypothesis_id="h2", status="supported",
                                   evidence=[seqs[3]], statement="ablating L1H0 changes the answer logit"))
        log.append(ConclusionEvent(component="L1H0", role="induction-ish mover", confidence=0.6,
                                   explanation="ablation moves the answer logit; attention is not previous-token",
                                   evidence=[seqs[2], seqs[3]]))
        log.append(ConclusionEvent(component="L0H1", role="inconclusive", confidence=0.1,
                                   explanation="no budget left", inconclusive_reason="budget"))
        log.append(ClusterEvent(name="movers", components=["L1H0"], explanation="write the answer"))
        log.append(BudgetEvent(steps=len(CELLS), tool_calls=len(CELLS), wall_s=1.0))
        log.append(EvaluationEvent(evaluator="reference", scores={"precision": 1.0, "recall": 0.5, "f1": None}))
        log.append(RunFinishedEvent(status="completed", summary="toy run"))
    return run_dir


def tamper(run_dir: Path, seq: int, path: list[str], new: Any) -> None:
    """Change one value inside ``data`` of event ``seq`` in ``events.jsonl`` (keeps the line valid JSON)."""
    f = run_dir / "events.jsonl"
    lines = f.read_text().splitlines()
    obj = json.loads(lines[seq])
    node = obj["data"]
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = new
    lines[seq] = json.dumps(obj)
    f.write_text("\n".join(lines) + "\n")


_CACHE: dict[str, Path] = {}


def recorded_run_dir(tmp_path_factory) -> Path:
    """The recorded run, built once per test session (shared by the replay and report tests)."""
    if "run" not in _CACHE:
        from tools.tiny import make_tiny_model

        root = tmp_path_factory.mktemp("recorded")
        model_dir = make_tiny_model("gpt2", root / "model")
        _CACHE["run"] = record_run(root / "runs" / "20260101-000000-abcdef", str(model_dir))
    return _CACHE["run"]


def fresh_copy(run_dir: Path, dst: Path) -> Path:
    """A copy of a run directory (to tamper with)."""
    out = dst / run_dir.name
    shutil.copytree(run_dir, out, ignore=shutil.ignore_patterns(".kernel"))  # kernel sockets stay behind
    return out


def test_planner_replay_compares_localisation_by_the_components_it_chose():
    from agent.log import ConclusionEvent, ToolCallEvent
    from agent.replay.planner import compare_runs

    def run(chunks: int, comps: list[str]) -> list:
        evs = [ToolCallEvent(call_id="localise-sweep", name="attribution_sweep", input={"method": "attribution"})]
        evs += [ToolCallEvent(call_id=f"localise-exact-{i}", name="attribution_sweep", input={"i": i})
                for i in range(chunks)]
        evs += [ToolCallEvent(call_id=f"off-{c}", name="ablate", input={"components": [c]}, component=c) for c in comps]
        return evs + [ConclusionEvent(component=c, role="r", explanation="", confidence=1) for c in comps]

    assert compare_runs(run(1, ["L1H0", "MLP0"]), run(3, ["L1H0", "MLP0"])) == []  # other chunking: same run
    diff = compare_runs(run(1, ["L1H0", "MLP0"]), run(1, ["MLP0", "L1H0"]))
    assert diff[0] == "components investigated: logged ['L1H0', 'MLP0'] vs now ['MLP0', 'L1H0']"
