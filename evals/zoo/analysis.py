"""Reference-circuit analysis of the trained zoo models, with ``tools``' interventions.

For each head and MLP of a trained toy model, on a held-out batch of its task, this measures

- ``ablation``: fraction of the task metric lost when the component is mean-ablated alone;
- ``patch``: fraction of the clean−corrupt metric gap recovered by patching the component's clean
  output into the corrupt run (clean → corrupt);
- ``dla``: direct logit attribution at END (logit-difference units);
- attention from END (and, for IOI, from S2) to each named position; previous-token, induction
  (best offset) and duplicate-token scores from ``tools.head_scores``.

The circuit is the smallest set, taken in order of importance (``max(|ablation|, |patch|)``), whose
complement can be mean-ablated while keeping at least ``keep`` (80%) of the metric, and whose own
mean-ablation leaves at most ``broken`` (30%) of it (metrics normalised between the clean run and the
run with every head and MLP mean-ablated); each member gets a role from rules on the measurements
(see :func:`label`). ``python -m evals.zoo.analysis NAME`` prints
the table and ``--write`` stores the reference (source ``project analysis``, numbers in ``evidence``)
in the task's YAML file.

>>> ANALYSIS_SEED
2024
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

import torch

ANALYSIS_SEED = 2024
"""Seed of the analysis batch (different from training and from the zoo's accuracy evaluation)."""
GENERIC_KINDS = ("template", "pairs")
"""Task kinds defined in YAML alone (evals.tasks.generic): labelled by the task-agnostic rules of :func:`label`."""


@dataclass
class Evidence:
    component: str
    ablation: float = 0.0
    patch: float = 0.0
    dla: float = 0.0
    attn_end: dict[str, float] = field(default_factory=dict)
    attn_s2: dict[str, float] = field(default_factory=dict)
    prev_token: float = 0.0
    induction: float = 0.0
    induction_offset: int = 1
    duplicate_token: float = 0.0
    attn_after_s2: float = 0.0
    """IOI: mean attention from the three tokens after S2 back to S2."""
    back: tuple[int, float] = (1, 0.0)
    """(k, mean attention from every position to the token k back), for the best k in 1..4."""
    copy_offset: tuple[int, float] = (1, 0.0)
    """Induction task: (o, attention from END to NEXT + o - 1) for the best o in 1..4 (o = 1 is textbook)."""
    patch_at: dict[str, float] = field(default_factory=dict)
    """Generic kinds: role → fraction of the gap recovered by patching the clean output at that position only."""
    attn_at: dict[str, dict[str, float]] = field(default_factory=dict)
    """Generic kinds, heads: role → where the head attends from that role's position (roles, self, previous, first)."""

    @property
    def importance(self) -> float:
        return max(abs(self.ablation), abs(self.patch))


@dataclass
class Analysis:
    name: str
    task: str
    metric_clean: float
    metric_corrupt: float
    evidence: dict[str, Evidence]
    circuit: list[str]
    kept_fraction: float
    """Metric with every component outside the circuit mean-ablated, as a fraction of the clean metric."""
    circuit_fraction: float
    """Metric with the circuit mean-ablated, as a fraction of the clean metric."""
    roles: dict[str, tuple[str, str]] = field(default_factory=dict)
    """component → (role, explanation)."""


def measure(name: str, n: int = 256, seed: int = ANALYSIS_SEED) -> tuple[object, object, object, dict[str, Evidence],
                                                                         float, float]:
    """Load zoo model ``name`` and measure every head's and MLP's evidence (see the module docstring)."""
    from evals.tasks import load_task
    from evals.zoo import load_zoo_model, zoo_entry
    from tools import (
        ablate,
        attention_patterns,
        attention_summary,
        direct_logit_attribution,
        head_scores,
        patching_sweep,
    )
    from tools import patch as patch_one
    from tools.inspection import subdiagonal

    torch.manual_seed(0)
    model = load_zoo_model(name)
    spec = load_task(zoo_entry(name).task)
    batch = spec.make_batch(model.tokenizer, n, seed)
    metric = spec.metric_fn(model.tokenizer)
    with torch.no_grad():
        m0 = float(metric(model(batch.clean_ids), batch))
        m1 = float(metric(model(batch.corrupt_ids), batch))
    heads = model.components("heads")
    comps = heads + model.components("mlps")
    patch = patching_sweep(model, batch, metric, components=comps, direction="clean_to_corrupt")
    dla = direct_logit_attribution(model, batch, comps)
    scores = head_scores(model, heads)
    pats = attention_patterns(model, batch, heads)
    rows = torch.arange(batch.size)
    ev: dict[str, Evidence] = {}
    for c in comps:
        logits = ablate(model, batch, [c], method="mean")
        e = Evidence(component=str(c), ablation=(m0 - float(metric(logits, batch))) / m0,
                     patch=patch[c] / (m0 - m1) if abs(m0 - m1) > 1e-6 else 0.0, dla=dla[c])
        if c in scores:
            s = scores[c]
            e.prev_token, e.induction, e.induction_offset = s.prev_token, s.induction, s.induction_offset
            e.duplicate_token = s.duplicate_token
            e.attn_end = attention_summary(model, batch, c, query="END").roles
            if "S2" in batch.positions:
                e.attn_s2 = attention_summary(model, batch, c, query="S2").roles
                s2 = batch.positions["S2"]
                after = [pats[c][rows, s2 + k, s2] for k in (1, 2, 3) if bool((s2 + k < batch.end).all())]
                e.attn_after_s2 = float(torch.stack(after).mean()) if after else 0.0
            T = batch.seq_len
            backs = {k: subdiagonal(pats[c], k) for k in (1, 2, 3, 4)}
            kb = max(backs, key=backs.get)
            e.back = (kb, backs[kb])
            if "NEXT" in batch.positions:
                offs = {o: float(pats[c][rows, batch.end, (batch.positions["NEXT"] + o - 1).clamp(max=T - 1)].mean())
                        for o in (1, 2, 3, 4)}
                ob = max(offs, key=offs.get)
                e.copy_offset = (ob, offs[ob])
        if spec.generator.kind in GENERIC_KINDS and abs(m0 - m1) > 1e-6:
            for role in batch.positions:
                e.patch_at[role] = (float(metric(patch_one(model, batch, [c], positions=role), batch)) - m1) / (m0 - m1)
                if c in scores and role != "END":
                    s_ = attention_summary(model, batch, c, query=role)
                    e.attn_at[role] = {**s_.roles, "self": s_.self_, "previous": s_.previous, "first": s_.first}
        ev[str(c)] = e
    return model, spec, batch, ev, m0, m1


def _kept(model, spec, batch, ablated: list) -> float:
    """Metric with ``ablated`` mean-ablated, normalised: 1 = clean, 0 = every head and MLP mean-ablated.

    The floor matters for ``prob_diff``: with no information about YY a model still prefers late years,
    which scores well above 0.
    """
    from tools import ablate

    metric = spec.metric_fn(model.tokenizer)
    everything = model.components("heads") + model.components("mlps")
    with torch.no_grad():
        m0 = float(metric(model(batch.clean_ids), batch))
    floor = float(metric(ablate(model, batch, everything, method="mean"), batch))
    if not ablated:
        return 1.0
    return (float(metric(ablate(model, batch, ablated, method="mean"), batch)) - floor) / (m0 - floor)


def complement_kept(model, spec, batch, circuit: list[str]) -> float:
    """Normalised metric (see :func:`_kept`) with everything outside ``circuit`` mean-ablated."""
    rest = [c for c in model.components("heads") + model.components("mlps") if str(c) not in circuit]
    return _kept(model, spec, batch, rest)


def circuit_kept(model, spec, batch, circuit: list[str]) -> float:
    """Normalised metric (see :func:`_kept`) with the circuit itself mean-ablated."""
    return _kept(model, spec, batch, list(circuit))


def label(kind: str, e: Evidence) -> tuple[str, str]:
    """A role and a one-line explanation from the measurements (rules per task kind)."""
    c = e.component
    nums = (f"mean-ablation loses {100 * e.ablation:.0f}% of the metric; clean→corrupt patching recovers "
            f"{100 * e.patch:.0f}% of the gap; DLA {e.dla:+.2f}")
    if c.startswith("MLP") and kind in GENERIC_KINDS:
        return _label_generic(e, nums)
    if c.startswith("MLP"):
        if kind == "greater_than":
            return "comparison", f"MLP that turns the moved year into 'years above YY' at END; {nums}."
        if e.dla > 0.5:
            return "output mlp", f"MLP writing the answer directly (positive direct logit attribution); {nums}."
        return "mlp", f"MLP needed upstream (little direct effect on the logits); {nums}."
    top_end = max(e.attn_end, key=e.attn_end.get) if e.attn_end else None
    if kind == "induction":
        o, a = e.copy_offset
        if (e.induction >= 0.5 or a >= 0.15) and e.dla > 0.5:
            return "induction", (f"Induction head: from END attends to the token {o - 1} after NEXT (offset {o} "
                                 f"from the earlier occurrence; attention {a:.2f}; head_scores induction "
                                 f"{e.induction:.2f} at offset {e.induction_offset}) and copies it to the logits; "
                                 f"{nums}.")
        k, b = e.back
        if b >= 0.3:
            return "previous token", (f"Previous-token-style head looking {k} token(s) back (attention {b:.2f}): "
                                      f"writes recent tokens into each position for the induction heads' keys; "
                                      f"{nums}.")
        return "other", f"Contributes without a clean attention signature; {nums}."
    if kind == "ioi":
        s_end = e.attn_end.get("S1", 0) + e.attn_end.get("S2", 0)
        if e.attn_end.get("IO", 0) >= 0.2 and s_end <= 0.1 and e.dla > 0.5:
            return "name mover", (f"At END attends to IO ({e.attn_end['IO']:.2f}) and not to S ({s_end:.2f}) and "
                                  f"writes IO to the logits; {nums}.")
        if e.attn_after_s2 >= 0.5:
            return "s-inhibition", (f"From S2 and the tokens after it attends back to S2 ({e.attn_after_s2:.2f}), "
                                    f"carrying the repeated name to where the name movers read it, so they avoid S "
                                    f"(the toy model's S-inhibition); {nums}.")
        if top_end == "IO" and e.attn_end["IO"] >= 0.3 and e.dla > 0.5:  # it must write the name to the logits
            return "name mover", (f"At END attends to IO ({e.attn_end['IO']:.2f}) and writes it to the logits; "
                                  f"{nums}.")
        if top_end == "IO" and e.dla < 0:
            return "negative name mover", f"At END attends to IO ({e.attn_end['IO']:.2f}) but lowers its logit; {nums}."
        if top_end in ("S1", "S2") and e.attn_end[top_end] >= 0.3:
            return "s-inhibition", (f"At END attends to the subject ({top_end}: {e.attn_end[top_end]:.2f}); its "
                                    f"output steers later heads away from S; {nums}.")
        if e.attn_s2.get("S1", 0) >= 0.3:
            return "duplicate token", (f"At S2 attends to the earlier copy S1 ({e.attn_s2['S1']:.2f}), marking the "
                                       f"subject as repeated; {nums}.")
        if e.prev_token >= 0.5:
            return "previous token", f"Previous-token head (score {e.prev_token:.2f}); {nums}."
        return "other", f"Contributes without a clean attention signature; {nums}."
    if kind in GENERIC_KINDS:
        return _label_generic(e, nums)
    if kind == "greater_than":
        if top_end == "YY" and e.attn_end["YY"] >= 0.3:
            return "year mover", f"At END attends to YY ({e.attn_end['YY']:.2f}) and moves the year; {nums}."
        return "other", f"Contributes without attending to YY; {nums}."
    return "other", nums


def _label_generic(e: Evidence, nums: str) -> tuple[str, str]:
    """Task-agnostic rules for the generic kinds, in terms of the task's named positions.

    - ``mover``: a head that at END attends ≥ 0.3 to one named position (the most) and writes the answer
      (DLA > 0.5);
    - ``output mlp``: an MLP with DLA > 0.5;
    - ``<ROLE>-position head`` / ``<ROLE>-position mlp``: patching its clean output at one named position
      (not END) alone recovers ≥ 30% of the gap and at least twice what patching it at END does: it writes
      what later layers read at that position;
    - ``other`` otherwise.
    """
    head = not e.component.startswith("MLP")
    top_end = max(e.attn_end, key=e.attn_end.get) if e.attn_end else None
    if head and top_end and e.attn_end[top_end] >= 0.3 and e.dla > 0.5:
        rest = max([v for k, v in e.attn_end.items() if k != top_end] or [0.0])
        return "mover", (f"At END attends to {top_end} ({e.attn_end[top_end]:.2f}; other named positions ≤ "
                         f"{rest:.2f}) and writes the answer to the logits; {nums}.")
    if not head and e.dla > 0.5:
        return "output mlp", f"MLP writing the answer directly (positive direct logit attribution); {nums}."
    at = {k: v for k, v in e.patch_at.items() if k != "END"}
    if at:
        r = max(at, key=at.get)
        end = e.patch_at.get("END", 0.0)
        if at[r] >= 0.3 and at[r] >= 2 * max(end, 0.0):
            where = ""
            if head and r in e.attn_at:
                a = e.attn_at[r]
                k = max(a, key=a.get)
                where = f" At {r} it attends mostly to {'itself' if k == 'self' else k} ({a[k]:.2f})."
            kind = "head" if head else "mlp"
            return f"{r}-position {kind}", (f"Writes at {r} what later layers read there: patching its clean output "
                                            f"at {r} alone recovers {100 * at[r]:.0f}% of the gap (at END "
                                            f"{100 * end:.0f}%).{where} {nums[0].upper() + nums[1:]}."
                                            .replace("(at END -0%)", "(at END 0%)"))
    return "other", f"Contributes without a clean signature in the task's positions; {nums}."


def analyse(name: str, keep: float = 0.8, min_importance: float = 0.1, broken: float = 0.3) -> Analysis:
    """Measure, choose the circuit and label its members.

    Faithful: with the complement mean-ablated the metric keeps ``keep`` of its clean value.
    Complete: with the circuit itself mean-ablated at most ``broken`` of it remains.
    """
    model, spec, batch, ev, m0, m1 = measure(name)
    ranked = sorted(ev.values(), key=lambda e: -e.importance)
    circuit: list[str] = [e.component for e in ranked if e.importance >= min_importance]
    kept = complement_kept(model, spec, batch, circuit)
    for e in ranked:
        if kept >= keep:
            break
        if e.component not in circuit:
            circuit.append(e.component)
            kept = complement_kept(model, spec, batch, circuit)
    # completeness: ablating the circuit itself must break the task (redundant backups get added)
    while circuit_kept(model, spec, batch, circuit) > broken and len(circuit) < len(ranked):
        circuit.append(next(e.component for e in ranked if e.component not in circuit))
    kept = complement_kept(model, spec, batch, circuit)
    roles = {c: label(spec.generator.kind, ev[c]) for c in circuit}
    return Analysis(name=name, task=spec.name, metric_clean=m0, metric_corrupt=m1, evidence=ev, circuit=circuit,
                    kept_fraction=kept, circuit_fraction=circuit_kept(model, spec, batch, circuit), roles=roles)


def reference_entries(a: Analysis) -> list[dict]:
    out = []
    for c in a.circuit:
        e = a.evidence[c]
        role, expl = a.roles[c]
        evidence = {"ablation_drop": round(e.ablation, 4), "patch_recovery": round(e.patch, 4), "dla": round(e.dla, 4)}
        if not c.startswith("MLP"):
            evidence |= {"prev_token": round(e.prev_token, 4), "induction": round(e.induction, 4),
                         "duplicate_token": round(e.duplicate_token, 4)}
            evidence |= {f"attn_end_{k}": round(v, 4) for k, v in e.attn_end.items()}
            if e.attn_after_s2:
                evidence["attn_after_s2"] = round(e.attn_after_s2, 4)
            evidence |= {"back_k": e.back[0], "back_attn": round(e.back[1], 4)}
            if e.copy_offset[1]:
                evidence |= {"copy_offset": e.copy_offset[0], "copy_attn": round(e.copy_offset[1], 4)}
            for q, att in e.attn_at.items():
                top = max(att, key=att.get)
                evidence |= {f"attn_{q}_self": round(att["self"], 4), f"attn_{q}_top": round(att[top], 4)}
        evidence |= {f"patch_at_{k}": round(v, 4) for k, v in e.patch_at.items()}
        out.append({"component": c, "role": role, "explanation": expl, "source": "project analysis",
                    "evidence": evidence})
    return out


def write_reference(a: Analysis) -> None:
    """Replace the ``reference:`` block of the task's YAML file with the analysed circuit."""
    import yaml

    from evals.tasks.spec import DATA_DIR

    path = DATA_DIR / f"{a.task}.yaml"
    text = path.read_text()
    block = yaml.safe_dump({"reference": reference_entries(a)}, sort_keys=False, width=110, allow_unicode=True)
    note = (f"# reference: python -m evals.zoo.analysis {a.name} --write (seed {ANALYSIS_SEED}); complement of "
            f"the circuit mean-ablated keeps {100 * a.kept_fraction:.0f}% of the metric, the circuit mean-ablated "
            f"{100 * a.circuit_fraction:.0f}%.\n")
    new, k = re.subn(r"(?ms)^(# reference:[^\n]*\n)?reference:.*?(?=^[A-Za-z_]|\Z)", lambda _: note + block, text,
                     count=1)
    if k != 1:
        raise RuntimeError(f"no reference block in {path}")
    path.write_text(new)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Reference-circuit analysis of a trained zoo model.")
    ap.add_argument("name")
    ap.add_argument("--write", action="store_true", help="store the reference in the task's YAML")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    a = analyse(args.name)
    print(f"{a.name}: metric clean {a.metric_clean:.3f} corrupt {a.metric_corrupt:.3f}; circuit {a.circuit}; "
          f"complement ablated keeps {100 * a.kept_fraction:.1f}%, circuit ablated {100 * a.circuit_fraction:.1f}%")
    for e in sorted(a.evidence.values(), key=lambda e: -e.importance):
        att = " ".join(f"{k}:{v:.2f}" for k, v in e.attn_end.items())
        s2 = " ".join(f"{k}:{v:.2f}" for k, v in e.attn_s2.items())
        print(f"{e.component:6s} abl {e.ablation:+.3f} patch {e.patch:+.3f} dla {e.dla:+.2f} prev {e.prev_token:.2f} "
              f"ind {e.induction:.2f}@{e.induction_offset} dup {e.duplicate_token:.2f} | END {att} | S2 {s2}")
    for c in a.circuit:
        print(c, a.roles[c])
    if args.write:
        write_reference(a)


if __name__ == "__main__":
    main()
