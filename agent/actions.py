"""The planner's tools: pydantic input schemas, the same for every planner (claude, offline, replay).

Every experiment tool becomes a **code cell** — a string calling ``tools`` inside the sandbox kernel
that assigns ``_result`` — so each experiment is reproducible code in the log and its numbers come
back as JSON (``ExecutionResult.data``). The kernel's setup cells (:func:`setup_cells`) define the
names the cells use:

============  ====================================================================================
``model``     the ``tools.Model`` under study
``task``      the ``evals.tasks.TaskSpec``
``batches``   ``{"main": TaskBatch, "heldout": TaskBatch}``; held-out prompts use a fresh seed
``batch``     ``batches["main"]``
``metric``    the task metric, ``metric(logits, batch) -> scalar`` (``task.metric_fn``; logit difference by default)
``_tojson``   turns tensors / ``Component`` keys / nested containers into JSON-able values
``_base``     ``_base(b) -> {"clean", "corrupt", "gap"}``: the metric on clean and corrupt prompts
============  ====================================================================================

Non-experiment tools (``record_hypothesis``, ``conclude_component``, ``finish``) run no code; the loop
turns them into ``hypothesis`` / ``conclusion`` events.

>>> a = Ablate(components=["L1H2"], method="mean")
>>> "tools.ablate(model, _b, parse_components(['L1H2']), method='mean')" in a.to_code()
True
>>> sorted(TOOLS)[:3]
['ablate', 'attention', 'attribution_sweep']
>>> RecordHypothesis(component="L1H2", statement="moves the IO name", status="proposed").status
'proposed'
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tools.components import Component, parse_components

PromptSet = Literal["main", "heldout"]


def _check_components(v: list[str]) -> list[str]:
    return [str(c) for c in parse_components(v)]


def _check_component(v: str) -> str:
    return str(Component.parse(v))


ComponentName = Annotated[str, AfterValidator(_check_component)]
"""A component name in the project grammar (``L1H2``, ``MLP0``...), normalised."""
ComponentList = Annotated[list[str], AfterValidator(_check_components)]


class _Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_code(self) -> str | None:  # pragma: no cover - overridden
        """The cell this tool runs, or ``None`` for tools that run no code."""
        return None

    def meta(self) -> dict:
        """The tool's inputs, echoed at the top of its ``_result`` so each number says what produced it."""
        return self.model_dump(mode="json")


def _cell(comment: str, body: list[str]) -> str:
    return "\n".join([f"# {comment}", *body])


class RunCode(_Tool):
    """Run arbitrary Python in the sandbox kernel. Assign ``_result = {...}`` to return JSON numbers."""

    code: str = Field(min_length=1, description="Python source for one cell; assign _result to return data.")
    purpose: str | None = Field(None, description="One line: what this cell tests.")

    def to_code(self) -> str:
        return self.code if not self.purpose else f"# {self.purpose}\n{self.code}"


class Ablate(_Tool):
    """Ablate components and measure the task metric (effect = clean − ablated, and as a fraction of the gap)."""

    components: ComponentList = Field(min_length=1, description="Components, e.g. ['L1H2', 'MLP0'].")
    method: Literal["mean", "zero", "resample"] = "mean"
    prompts: PromptSet = "main"


    def to_code(self) -> str:
        return _cell(f"ablate {','.join(self.components)} ({self.method}) on the {self.prompts} prompts", [
            f"_b = batches[{self.prompts!r}]",
            "_m0 = _base(_b)",
            f"_abl = float(metric(tools.ablate(model, _b, parse_components({self.components!r}), "
            f"method={self.method!r}), _b))",
            f"_result = {self.meta()!r}",
            "_result.update(clean=_m0['clean'], gap=_m0['gap'], ablated=_abl, effect=_m0['clean'] - _abl,",
            "               effect_frac=(_m0['clean'] - _abl) / _m0['gap'] if _m0['gap'] else None)",
        ])


class Patch(_Tool):
    """Activation patching: copy components' outputs between clean and corrupt runs; report recovered fraction."""

    components: ComponentList = Field(min_length=1)
    positions: list[str] | None = Field(None, description="Named roles (IO, S1, S2, END) or integer positions; all if omitted.")
    direction: Literal["clean_to_corrupt", "corrupt_to_clean"] = "clean_to_corrupt"
    prompts: PromptSet = "main"


    def to_code(self) -> str:
        pos = None if self.positions is None else [int(p) if p.lstrip("-").isdigit() else p for p in self.positions]
        return _cell(f"patch {','.join(self.components)} {self.direction} on the {self.prompts} prompts", [
            f"_b = batches[{self.prompts!r}]",
            "_m0 = _base(_b)",
            f"_pm = float(metric(tools.patch(model, _b, parse_components({self.components!r}), positions={pos!r}, "
            f"direction={self.direction!r}), _b))",
            "_ref = _m0['corrupt']" if self.direction == "clean_to_corrupt" else "_ref = _m0['clean']",
            f"_result = {self.meta()!r}",
            "_result.update(_m0, patched=_pm, effect=_pm - _ref,",
            "               effect_frac=(_pm - _ref) / _m0['gap'] if _m0['gap'] else None)",
        ])


class PathPatch(_Tool):
    """Path patching (IOI-paper method): the sender's corrupt output, only through the receivers' input."""

    sender: ComponentName
    receivers: ComponentList = Field(min_length=1)
    receiver_input: Literal["q", "k", "v", "resid"] = "resid"
    prompts: PromptSet = "main"


    def to_code(self) -> str:
        return _cell(f"path patch {self.sender} -> {','.join(self.receivers)} ({self.receiver_input})", [
            f"_b = batches[{self.prompts!r}]",
            "_m0 = _base(_b)",
            f"_pm = float(metric(tools.path_patch(model, _b, Component.parse({self.sender!r}), "
            f"parse_components({self.receivers!r}), receiver_input={self.receiver_input!r}), _b))",
            f"_result = {self.meta()!r}",
            "_result.update(_m0, patched=_pm, effect=_m0['clean'] - _pm,",
            "               effect_frac=(_m0['clean'] - _pm) / _m0['gap'] if _m0['gap'] else None)",
        ])


class AttributionSweep(_Tool):
    """Effect of patching each component (exact sweep or its gradient approximation), as fractions of the gap."""

    kind: Literal["heads", "mlps", "all"] = "all"
    method: Literal["exact", "attribution"] = "exact"
    top_k: int = Field(20, ge=1, le=500)
    prompts: PromptSet = "main"
    zero_ablation: bool = Field(False, description="Also zero-ablate each component (one forward each) and report "
                                                  "'ablation_frac': catches features constant across prompts.")

    def to_code(self) -> str:
        fn = "patching_sweep" if self.method == "exact" else "attribution_patching"
        comps = ("model.components('heads') + model.components('mlps')" if self.kind == "all"
                 else f"model.components({self.kind!r})")
        return _cell(f"{self.method} patching sweep over {self.kind} on the {self.prompts} prompts", [
            f"_b = batches[{self.prompts!r}]",
            "_m0 = _base(_b)",
            f"_sw = tools.{fn}(model, _b, metric, components={comps})",
            "_eff = {str(c): float(v) for c, v in _sw.items()}",
            f"_top = sorted(_eff, key=lambda k: -abs(_eff[k]))[:{self.top_k}]",
            f"_result = {self.meta()!r}",
            "_result.update(_m0, effects={k: _eff[k] for k in _top},",
            "               effect_frac={k: _eff[k] / _m0['gap'] if _m0['gap'] else None for k in _top})",
        ] + ([
            f"_za = {{str(c): _m0['clean'] - float(metric(tools.ablate(model, _b, [c], method='zero'), _b)) "
            f"for c in {comps}}}",
            "_result['ablation_frac'] = {k: v / _m0['gap'] if _m0['gap'] else None for k, v in _za.items()}",
        ] if self.zero_ablation else []))


class RedundancyCheck(_Tool):
    """Find redundant heads: ablate each layer's heads together (minus ``exclude``) and, where that joint
    effect far exceeds the members' single effects, every pair inside; reports the pairs that matter jointly."""

    exclude: ComponentList = Field(default_factory=list, description="Components already kept (left out of groups).")
    threshold: float = Field(0.10, ge=0, description="A pair is kept when its joint effect >= this fraction of the gap")
    synergy: float = Field(2.0, ge=1, description="... and >= synergy x the sum of its members' |single effects|.")
    method: Literal["mean", "zero"] = "mean"
    prompts: PromptSet = "main"

    def to_code(self) -> str:
        """One cell, batched: variants (a set of heads ablated together) are stacked along the batch, one
        chunk of the repeated prompts per variant, ``max(1, 4096 // (B*T))`` variants per forward; each head is
        replaced by its mean output over the prompts (per position) or zero in the rows of the variants
        that ablate it. Pass 1: every group member alone and each layer's group (the layer's heads not in
        ``exclude``, when ≥ 2). A group is *flagged* when joint ≥ threshold and ≥ synergy × Σ|single|.
        Pass 2: every pair inside a flagged group; a pair passing the same two tests is *kept*, with why."""
        return _cell(f"redundancy check ({self.method} ablation) of each layer's heads, excluding "
                     f"{','.join(self.exclude) or 'none'}, on the {self.prompts} prompts", [
            "import itertools as _it",
            f"_b = batches[{self.prompts!r}]",
            "_m0 = _base(_b)",
            f"_T, _S, _excl = {self.threshold!r}, {self.synergy!r}, set({self.exclude!r})",
            "_groups = {}",
            "for _c in model.components('heads'):",
            "    if str(_c) not in _excl:",
            "        _groups.setdefault(f'L{_c.layer}', []).append(str(_c))",
            "_groups = {k: v for k, v in _groups.items() if len(v) >= 2}",
            "_ids = _b.clean_ids.to(model.device)",
            "_B = _ids.shape[0]",
            "_all = [c for g in _groups.values() for c in g]",
            "_cache = tools.run_with_cache(model, _ids, parse_components(_all))[1] if _all else {}",
            "_ref = {str(c): " + ("a.mean(0, keepdim=True)" if self.method == "mean" else "torch.zeros_like(a[:1])")
            + " for c, a in _cache.items()}",
            "def _joint(variants):",
            "    out, k = {}, max(1, 4096 // _ids.numel())",
            "    for s in range(0, len(variants), k):",
            "        ch, iv = variants[s:s + k], {}",
            "        for c in dict.fromkeys(c for v in ch for c in v):",
            "            rows = torch.tensor([c in v for v in ch], device=model.device).repeat_interleave(_B)",
            "            iv[c] = (lambda r, m: (lambda o: torch.where(r[:, None, None], m.expand_as(o), o)))(rows, _ref[c])",
            "        lg = tools.run_with_interventions(model, _ids.repeat(len(ch), 1), iv)",
            "        for i, v in enumerate(ch):",
            "            fx = _m0['clean'] - float(metric(lg[i * _B:(i + 1) * _B], _b))",
            "            out[','.join(v)] = fx / _m0['gap'] if _m0['gap'] else 0.0",
            "    return out",
            "_single = _joint([[c] for c in _all])",
            "_gj = _joint(list(_groups.values()))",
            "_gres, _todo = {}, []",
            "for _l, _g in _groups.items():",
            "    _j, _s = _gj[','.join(_g)], sum(abs(_single[c]) for c in _g)",
            "    _gres[_l] = {'heads': _g, 'joint': _j, 'sum_single': _s, 'flagged': _j >= _T and _j >= _S * _s}",
            "    if _gres[_l]['flagged']:",
            "        _todo += [list(p) for p in _it.combinations(_g, 2)]",
            "_pairs = _joint(_todo) if _todo else {}",
            "_kept = {}",
            "for _p, _j in sorted(_pairs.items(), key=lambda kv: -kv[1]):",
            "    _a, _c2 = _p.split(',')",
            "    if _j >= _T and _j >= _S * (abs(_single[_a]) + abs(_single[_c2])):",
            "        for _x, _y in ((_a, _c2), (_c2, _a)):",
            "            _e = _kept.setdefault(_x, {'partners': [], 'joint': _j, 'why': []})",
            "            _e['partners'].append(_y)",
            "            _e['why'].append(f'{_x}+{_y} ablated together remove {_j:.2f} of the gap '",
            "                             f'(alone: {_x} {_single[_x]:+.3f}, {_y} {_single[_y]:+.3f})')",
            "_kept = {k: {**v, 'why': '; '.join(v['why'])} for k, v in _kept.items()}",
            f"_result = {self.meta()!r}",
            "_result.update(_m0, single=_single, groups=_gres, pairs=_pairs, kept=_kept)",
        ])


class Attention(_Tool):
    """Where a head attends from the scored position, in task terms (fraction on IO, S1, S2, previous token, BOS...)."""

    head: ComponentName
    prompts: PromptSet = "main"


    def to_code(self) -> str:
        return _cell(f"attention summary of {self.head} on the {self.prompts} prompts", [
            f"_result = {{'head': {self.head!r}, 'summary': _tojson(tools.attention_summary(model, "
            f"batches[{self.prompts!r}], Component.parse({self.head!r})))}}",
        ])


class LogitAttribution(_Tool):
    """Direct logit attribution of components onto the answer − wrong direction (logit lens of their outputs)."""

    components: ComponentList = Field(min_length=1)
    prompts: PromptSet = "main"


    def to_code(self) -> str:
        return _cell(f"direct logit attribution of {','.join(self.components)} on the {self.prompts} prompts", [
            f"_b = batches[{self.prompts!r}]",
            "_m0 = _base(_b)",
            f"_dla = _tojson(tools.direct_logit_attribution(model, _b, parse_components({self.components!r})))",
            "_result = {'dla': _dla, 'clean': _m0['clean'], 'gap': _m0['gap']}",
        ])


class HeadScores(_Tool):
    """OV copying, previous-token, induction and duplicate-token scores of heads (weights + random sequences)."""

    heads: ComponentList = Field(min_length=1)
    seed: int = 0

    def to_code(self) -> str:
        """``tools.head_scores`` plus a look-back scan: mean attention from t to t−k, k = 1..4, on random tokens
        (trained heads often look 2–3 tokens back rather than 1; see FIELD-NOTES), as ``lookback`` and
        ``lookback_offset``."""
        return _cell(f"head scores of {','.join(self.heads)} (seed {self.seed})", [
            f"_hs = _tojson(tools.head_scores(model, heads=parse_components({self.heads!r}), seed={self.seed}))",
            f"_g = torch.Generator().manual_seed({self.seed})",
            "_T = min(40, int(getattr(model.hf.config, 'n_positions', None) or "
            "getattr(model.hf.config, 'max_position_embeddings', 40)))",
            "_ids = torch.randint(min(4, model.hf.config.vocab_size - 1), model.hf.config.vocab_size, (16, _T), "
            "generator=_g)",
            f"_pats = tools.attention_patterns(model, _ids, parse_components({self.heads!r}))",
            "for _h, _p in _pats.items():",
            "    _lb = {k: float(_p[:, torch.arange(k, _T), torch.arange(0, _T - k)].mean()) for k in range(1, 5)}",
            "    _k = max(_lb, key=_lb.get)",
            "    _hs[str(_h)].update(lookback=_lb[_k], lookback_offset=_k)",
            "_result = {'scores': _hs}",
        ])


class Probe(_Tool):
    """Train a linear probe at a site and position for the answer token; held-out accuracy."""

    site: ComponentName = Field(description="A component, e.g. resid_post1 or L1H2.")
    position: str = "END"
    prompts: PromptSet = "main"
    seed: int = 0


    def to_code(self) -> str:
        pos = int(self.position) if self.position.lstrip("-").isdigit() else self.position
        return _cell(f"probe the answer at {self.site}, position {self.position}", [
            f"_b = batches[{self.prompts!r}]",
            f"_pr = tools.train_probe(model, _b, Component.parse({self.site!r}), _b.answer_ids, position={pos!r}, "
            f"seed={self.seed})",
            f"_result = {self.meta()!r}",
            "_result.update(heldout_accuracy=float(_pr.test_accuracy), train_accuracy=float(_pr.train_accuracy))",
        ])


class Steer(_Tool):
    """Add ``alpha`` × (clean − corrupt mean activation) at a site on corrupt prompts; report the metric change."""

    site: ComponentName
    alpha: float = 1.0
    prompts: PromptSet = "main"


    def to_code(self) -> str:
        return _cell(f"steer {self.site} by {self.alpha} x (clean - corrupt) on the {self.prompts} prompts", [
            f"_b = batches[{self.prompts!r}]",
            "_m0 = _base(_b)",
            f"_vec = tools.diff_of_means_vector(model, _b.clean_ids, _b.corrupt_ids, Component.parse({self.site!r}), "
            "position=_b.end)",
            f"_st = tools.steer(model, _b.corrupt_ids, Component.parse({self.site!r}), _vec, {self.alpha!r})",
            "_sm = float(metric(_st if torch.is_tensor(_st) else _st.logits, _b))",
            f"_result = {self.meta()!r}",
            "_result.update(_m0, steered=_sm, effect_frac=(_sm - _m0['corrupt']) / _m0['gap'] if _m0['gap'] else None)",
        ])


class RecordHypothesis(_Tool):
    """Record (or update) a hypothesis about a component and its status."""

    component: ComponentName
    statement: str = Field(min_length=1)
    status: Literal["proposed", "supported", "refuted", "inconclusive"] = "proposed"
    evidence: list[int] = Field(default_factory=list, description="seq numbers of log events supporting this.")
    prediction: str | None = Field(None, description="A testable prediction, e.g. on held-out prompts.")
    hypothesis_id: str | None = Field(None, description="Reuse an id to update an earlier hypothesis.")



class ConcludeComponent(_Tool):
    """Conclude the current component: its role (a short label), an explanation, confidence 0-1, evidence seqs."""

    component: ComponentName
    role: str = Field(min_length=1, max_length=80)
    explanation: str = Field(min_length=1)
    confidence: float = Field(ge=0, le=1)
    evidence: list[int] = Field(default_factory=list)



class Finish(_Tool):
    """End the investigation of the current component without a conclusion (e.g. nothing more to learn)."""

    summary: str = ""


TOOLS: dict[str, type[_Tool]] = {
    "run_code": RunCode,
    "ablate": Ablate,
    "patch": Patch,
    "path_patch": PathPatch,
    "attribution_sweep": AttributionSweep,
    "redundancy_check": RedundancyCheck,
    "attention": Attention,
    "logit_attribution": LogitAttribution,
    "head_scores": HeadScores,
    "probe": Probe,
    "steer": Steer,
    "record_hypothesis": RecordHypothesis,
    "conclude_component": ConcludeComponent,
    "finish": Finish,
}
"""Tool name → input model. The names are what every planner emits in ``tool_use`` blocks."""

EXPERIMENT_TOOLS = frozenset(n for n in TOOLS if n not in ("record_hypothesis", "conclude_component", "finish"))


def tool_specs() -> list:
    """The :class:`agent.llm.ToolSpec` list sent to every planner (built from the models above)."""
    from agent.llm import ToolSpec

    out = []
    for name, model in TOOLS.items():
        doc = (model.__doc__ or name).strip().splitlines()[0]
        out.append(ToolSpec.from_model(name, doc, model))
    return out


def input_schema(name: str) -> dict:
    """JSON schema of a tool's input (what a planner must send).

    >>> input_schema("ablate")["required"]
    ['components']
    """
    schema = TOOLS[name].model_json_schema()
    return schema


def setup_cells(model_ref: str, task_name: str, n_prompts: int, seed: int, threads: int | None = 1) -> list[str]:
    """The kernel's setup cells: imports, the model, the task and its main / held-out batches, helpers.

    ``model_ref`` is a zoo name or a path / HF id; held-out prompts use seed ``seed + 1000``.
    ``threads`` sets torch's intra-op threads in the kernel (None: torch's default). One thread is
    the fast choice for the small models here (measured ~15x faster than 2 threads for an ablation
    on a loaded 2-core machine); give more for large models on many cores.

    >>> cells = setup_cells("toy-ioi", "toy-ioi", 32, 0)
    >>> "load_zoo_model('toy-ioi')" in cells[1]
    True
    """
    imports = "\n".join([
        "import os",
        "os.environ.setdefault('HF_HUB_OFFLINE', '1')",
        "import json, math",
        "import torch",
        "import tools",
        "from tools import Component, parse_components",
        "torch.set_grad_enabled(True)",
    ] + ([f"torch.set_num_threads({int(threads)})"] if threads else []))
    spec_json = _task_file_json(task_name)
    load = "\n".join([
        "from evals.tasks import TaskSpec, load_task",
        "from evals.zoo import list_zoo, load_zoo_model",
        f"_ref = {model_ref!r}",
        "_zoo = {e.name for e in list_zoo()}",
        f"model = load_zoo_model({model_ref!r}) if _ref in _zoo else tools.load_model(_ref)",
        # a spec file is embedded: the kernel cannot see every host path, and resume/replay must not depend
        # on the file staying as it was
        f"task = TaskSpec.model_validate_json({spec_json!r})" if spec_json else f"task = load_task({task_name!r})",
        f"torch.manual_seed({seed})",
        f"batches = {{'main': task.make_batch(model.tokenizer, {n_prompts}, {seed}), "
        f"'heldout': task.make_batch(model.tokenizer, {n_prompts}, {seed + 1000})}}",
        "batch = batches['main']",
        "metric = task.metric_fn(model.tokenizer)",
    ])
    helpers = "\n".join([
        "def _tojson(x):",
        "    if isinstance(x, torch.Tensor):",
        "        return x.item() if x.numel() == 1 else x.detach().cpu().tolist()",
        "    if isinstance(x, dict):",
        "        return {str(k): _tojson(v) for k, v in x.items()}",
        "    if isinstance(x, (list, tuple)):",
        "        return [_tojson(v) for v in x]",
        "    if hasattr(x, 'model_dump'):",
        "        return _tojson(x.model_dump())",
        "    if hasattr(x, '__dataclass_fields__'):",
        "        return {k: _tojson(getattr(x, k)) for k in x.__dataclass_fields__}",
        "    if isinstance(x, float) and not math.isfinite(x):",
        "        return None",
        "    if isinstance(x, (int, float, str, bool)) or x is None:",
        "        return x",
        "    return str(x)",
        "",
        "_BASE = {}",
        "def _base(b):",
        "    key = id(b)",
        "    if key not in _BASE:",
        "        with torch.no_grad():",
        "            c = float(metric(model(b.clean_ids), b))",
        "            k = float(metric(model(b.corrupt_ids), b)) if b.corrupt_ids is not None else 0.0",
        "        _BASE[key] = {'clean': c, 'corrupt': k, 'gap': c - k}",
        "    return dict(_BASE[key])",
    ])
    return [imports, load, helpers]


def _task_file_json(task: str) -> str | None:
    """The spec as JSON when ``task`` is a spec file (not a built-in task name), else None."""
    from pathlib import Path

    p = Path(task)
    if p.suffix not in (".yaml", ".yml", ".json") and not p.is_file():
        return None
    from evals.tasks import load_task

    return load_task(p).model_dump_json()


def result_text(data: object, limit: int = 4000) -> str:
    """Compact JSON for a tool_result block, cut to ``limit`` characters with a marker.

    >>> result_text({"a": 1.23456789})
    '{"a": 1.2346}'
    >>> result_text("x" * 50, limit=10)
    '"xxxxxxxx… [cut 43 chars]'
    """
    text = json.dumps(_round(data), separators=(", ", ": ")) if not isinstance(data, str) else json.dumps(data)
    if len(text) > limit:
        cut = len(text) - limit + 1
        text = text[: limit - 1] + f"… [cut {cut} chars]"
    return text


def _round(x: object) -> object:
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x
