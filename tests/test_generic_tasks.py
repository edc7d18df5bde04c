"""Generic task kinds (template, pairs): invariants, validation errors, one tokenisation error per problem,
YAML round trips, and check_task's verdicts on ground truth (zoo models, corruptions that change nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evals.tasks import TaskSpecError, TokenizationError, list_tasks, load_task, spec_from_yaml
from evals.tasks.check import check_task
from evals.tasks.generators import CLEAN_CORRUPT_LENGTHS
from evals.tasks.generic import PairsGenerator, TemplateGenerator
from evals.tasks.starters import starter
from evals.zoo import list_zoo, load_zoo_model
from tools.tiny import word_tokenizer


def template(**kw) -> TemplateGenerator:
    base = dict(kind="template", templates=["when {IO} and {S} met , {S} gave it to"],
                slots={"IO": ["Ann", "Bob", "Cat", "Dan", "Eve"], "S": ["Ann", "Bob", "Cat", "Dan", "Eve"]},
                answer="{IO}", wrong="{S}", corruption={"redraw": ["S#2"]})
    return TemplateGenerator(**(base | kw))


def tok_for(gen) -> object:
    return word_tokenizer(gen.vocabulary())


def words(tok, ids: torch.Tensor) -> list[str]:
    return tok.convert_ids_to_tokens(ids.tolist())


# ------------------------------------------------------------------------------------------ template
def test_template_default_roles_are_slot_occurrences() -> None:
    g = template()
    assert g.roles() == ["IO", "S1", "S2", "END"]
    tok = tok_for(g)
    b = g.make_batch(tok, 32, seed=0)
    i = torch.arange(b.size)
    assert torch.equal(b.clean_ids[i, b.positions["IO"]], b.answer_ids)
    assert torch.equal(b.clean_ids[i, b.positions["S1"]], b.wrong_ids)
    assert torch.equal(b.clean_ids[i, b.positions["S2"]], b.wrong_ids)
    assert torch.equal(b.end, torch.full((b.size,), b.seq_len - 1))
    # redraw S#2: only the second S changes, to a name that is neither IO nor S
    diff = b.clean_ids != b.corrupt_ids
    assert torch.equal(diff.sum(1), torch.ones(b.size, dtype=torch.long))
    new = b.corrupt_ids[i, b.positions["S2"]]
    assert not (new == b.answer_ids).any() and not (new == b.wrong_ids).any()


def test_template_swap_exchanges_the_slots_everywhere() -> None:
    g = template(corruption={"swap": [["IO", "S"]]})
    b = g.make_batch(tok_for(g), 16, seed=1)
    i = torch.arange(b.size)
    assert torch.equal(b.corrupt_ids[i, b.positions["IO"]], b.wrong_ids)
    assert torch.equal(b.corrupt_ids[i, b.positions["S1"]], b.answer_ids)
    assert torch.equal(b.corrupt_ids[i, b.positions["S2"]], b.answer_ids)


def test_grouped_slot_answer_is_its_group_and_redraw_flips_it() -> None:
    spec = load_task("toy-pronoun")
    tok = word_tokenizer(spec.vocabulary())
    b = spec.make_batch(tok, 64, seed=3)
    g = spec.generator
    he, she = set(g.slots["S"]["he"]), set(g.slots["S"]["she"])
    i = torch.arange(b.size)
    subj = words(tok, b.clean_ids[i, b.positions["S"]])
    corr = words(tok, b.corrupt_ids[i, b.positions["S"]])
    ans, wrong = words(tok, b.answer_ids), words(tok, b.wrong_ids)
    for s, c, a, w in zip(subj, corr, ans, wrong, strict=True):
        assert a == ("he" if s in he else "she") and w == ("she" if s in he else "he")
        assert (c in he) == (w == "he") and (c in she) == (w == "she")  # the corrupt subject's pronoun is wrong
    assert torch.equal((b.clean_ids != b.corrupt_ids).sum(1), torch.ones(b.size, dtype=torch.long))
    objs = words(tok, b.clean_ids[i, b.positions["O"]])
    same = sum((o in he) == (s in he) for o, s in zip(objs, subj, strict=True))
    assert 0 < same < b.size  # the object is a distractor of either gender
    assert len({len(p.split()) for p in b.prompts}) == 1 and {p.split()[-1] for p in b.prompts} == {"then", "so"}


def test_group_markers_in_templates_and_explicit_positions() -> None:
    spec = load_task("acronyms-gpt2-small")
    g = spec.generator
    assert spec.roles == ["L1", "END"]
    from tests.test_tasks import regex_word_tokenizer

    tok = regex_word_tokenizer(spec.vocabulary())
    b = spec.make_batch(tok, 32, seed=0)
    letter = {w: k for k, ws in g.slots["W1"].items() for w in ws}
    for r in range(b.size):
        w1, w2, w3 = b.prompts[r].split()[1:4]
        assert words(tok, b.clean_ids[r, b.positions["L1"][r]:][:2]) == [letter[w1], letter[w2]]
        assert tok.convert_ids_to_tokens(int(b.answer_ids[r])) == letter[w3]
        assert tok.convert_ids_to_tokens(int(b.wrong_ids[r])) != letter[w3]
    assert torch.equal(b.positions["L1"] + 1, b.end)


@pytest.mark.parametrize("field, value, match", [
    ("templates", ["when {IO} and {X} met"], "has no 'X'"),
    ("answer", "{IO.other}", "needs slot IO to have groups"),
    ("wrong", "{IO}", "answer and wrong are the same"),
    ("corruption", {"redraw": ["S#3"]}, "has 2 {S} \\(needs 3\\)"),
    ("corruption", {}, "needs 'redraw' or 'swap'"),
    ("corruption", {"swap": [["IO", "S#2"]]}, "swap two slots or two occurrences"),
    ("positions", {"END": "IO"}, "END is the last token"),
    ("positions", {"A": "IO", "B": "IO#1"}, "name the same position"),
    ("templates", ["when {IO} and {S} met , {S} gave it to", "then {S} saw {IO} , {S} and {S} left"], "other slot counts"),
    ("slots", {"IO": ["Ann"], "S": []}, "slot S has no fillers"),
])
def test_template_validation_errors(field, value, match) -> None:
    with pytest.raises(ValueError, match=match):
        template(**{field: value})


def test_bad_generic_spec_file_is_one_error_naming_file_and_field(tmp_path) -> None:
    text = starter("t", "template").replace('wrong: "{S.other}"', 'wrong: "{S.nope}"')
    p = tmp_path / "t.yaml"
    p.write_text(text)
    with pytest.raises(TaskSpecError) as ei:
        load_task(p)
    msg = str(ei.value)
    assert str(p) in msg and "generator.template" in msg and "{S.nope}" in msg and len(msg.splitlines()) == 1


# ------------------------------------------------------------------- one tokenisation error per problem
def hyphen_tokenizer(words_: list[str]):
    """Word level, but punctuation splits words ("Ann-Marie" is three tokens), as sub-word tokenizers do."""
    from tests.test_tasks import regex_word_tokenizer

    return regex_word_tokenizer(sorted({p for w in words_ for p in w.replace("-", " - ").split()}))


@pytest.mark.parametrize("kw, match", [
    (dict(slots={"IO": ["Ann-Marie", "Bo-Bob"], "S": ["Cat-Kay", "Dan-Dee"]}), r"slot IO \('Ann-Marie'|slot IO \('Bo-Bob'"),
    (dict(answer="{IO}-x", wrong="{S}"), r"the answer ' \w+-x' is 3 tokens"),
    (dict(templates=["when {IO} and {S} met at {P} , {S} gave it to"], corruption={"redraw": ["P"]},
          slots={"IO": ["Ann", "Bob"], "S": ["Cat", "Dan"], "P": ["home", "big-park"]},
          positions={"IO": "IO", "S2": "S#2"}), CLEAN_CORRUPT_LENGTHS),
])
def test_each_tokenisation_problem_is_one_clear_error(kw, match) -> None:
    g = template(**kw)
    tok = hyphen_tokenizer(g.vocabulary())
    with pytest.raises(TokenizationError, match=match) as ei:
        g.make_batch(tok, 8, seed=0)
    assert len(str(ei.value).splitlines()) == 1 and "—" in str(ei.value)  # what — how to fix
    issues = g.diagnose(tok, draws=50)
    assert issues and issues[0].count >= 25 and issues[0].fix


def test_diagnose_reports_templates_of_different_lengths() -> None:
    g = template(templates=["when {IO} and {S} met , {S} gave it to", "{IO} and {S} met , {S} gave it to"])
    issues = g.diagnose(tok_for(g), draws=100)
    assert len(issues) == 1 and "2 different lengths" in issues[0].problem
    b = g.make_batch(tok_for(g), 16, seed=0)  # a batch still forms, from one length
    assert len({len(p.split()) for p in b.prompts}) == 1


# ----------------------------------------------------------------------------------------------- pairs
def pairs(**kw) -> PairsGenerator:
    items = [dict(clean=f"when {a} and {b} met , {b} gave it to", corrupt=f"when {a} and {b} met , {c} gave it to",
                  answer=a, wrong=b, positions={"IO": a, "S2": f"{b}#2"})
             for a, b, c in [("Ann", "Bob", "Cat"), ("Dan", "Eve", "Ann"), ("Bob", "Cat", "Dan")]]
    return PairsGenerator(**({"kind": "pairs", "items": items} | kw))


def test_pairs_roles_by_word_and_seeded_order() -> None:
    g = pairs()
    assert g.roles() == ["IO", "S2", "END"]
    tok = tok_for(g)
    b = g.make_batch(tok, 7, seed=0)  # more prompts than items: they repeat
    i = torch.arange(b.size)
    assert torch.equal(b.clean_ids[i, b.positions["IO"]], b.answer_ids)
    assert torch.equal(b.clean_ids[i, b.positions["S2"]], b.wrong_ids)
    assert int(b.positions["S2"][0]) == 7  # the second "Bob", after BOS
    assert len(set(b.prompts)) == 3 and b.prompts[3:6] == b.prompts[:3]  # each item once, then again
    assert torch.equal(g.make_batch(tok, 7, seed=0).clean_ids, b.clean_ids)
    orders = {tuple(g.make_batch(tok, 3, seed=s).prompts) for s in range(6)}
    assert len(orders) > 1  # the seed shuffles the items


def test_pairs_batches_keep_the_majority_length() -> None:
    items = [i.model_dump() for i in pairs().items]
    items.append(dict(clean="then Ann gave it to", corrupt="then Bob gave it to", answer="Ann", wrong="Bob",
                      positions={"IO": "Ann", "S2": "it"}))
    g = pairs(items=items)
    tok = tok_for(g)
    b = g.make_batch(tok, 8, seed=0)
    assert "then Ann gave it to" not in b.prompts and b.seq_len == 11
    issues = g.diagnose(tok)
    assert len(issues) == 1 and "left out" in issues[0].problem and issues[0].count == 1


@pytest.mark.parametrize("change, match", [
    (dict(answer="Ann-Marie"), r"item 0: the answer ' Ann-Marie' is 3 tokens"),
    (dict(corrupt="when Ann and Bob met , Cat-Kay gave it to"), rf"item 0: {CLEAN_CORRUPT_LENGTHS}"),
    (dict(clean="when Ann-Marie and Bob met , Bob gave it to", positions={"IO": "Ann-Marie", "S2": "Bob#2"}),
     r"item 0: role IO \('Ann-Marie'\) is 3 tokens"),
])
def test_pairs_tokenisation_errors_name_the_item(change, match) -> None:
    items = [i.model_dump() for i in pairs().items]
    items[0] |= change
    g = pairs(items=items)
    tok = hyphen_tokenizer(g.vocabulary())
    with pytest.raises(TokenizationError, match=match):
        g.make_batch(tok, 4, seed=0)
    assert any(match.split(": ")[-1][:10].replace("\\", "") in i.problem for i in g.diagnose(tok))


def test_pairs_validation_errors() -> None:
    items = [i.model_dump() for i in pairs().items]
    with pytest.raises(ValueError, match="item 1 names roles"):
        pairs(items=[items[0], items[1] | {"positions": {"IO": "Dan"}}])
    with pytest.raises(ValueError, match="not a whole word"):
        pairs(items=[items[0] | {"positions": {"IO": "An", "S2": "Bob#2"}}])
    with pytest.raises(ValueError, match="answer and wrong are the same"):
        pairs(items=[items[0] | {"wrong": "Ann"}])


# --------------------------------------------------------------------------------------- specs as data
def test_every_shipped_spec_round_trips_through_yaml() -> None:
    specs = list_tasks()
    assert {"toy-pronoun", "acronyms-gpt2-small", "sequence-continuation-gpt2-small"} <= {s.name for s in specs}
    for s in specs:
        assert spec_from_yaml(s.to_yaml(), s.name) == s, s.name


def test_six_literature_tasks_with_sources() -> None:
    zoo = {e.name for e in list_zoo()}  # the zoo's references come from project analysis or construction
    real = [s for s in list_tasks() if s.model not in zoo]
    assert len(real) >= 6
    for s in real:
        assert s.sources and s.reference and all(e.source for e in s.reference), s.name
    acr = load_task("acronyms-gpt2-small").reference_roles()
    assert acr["letter mover"] == ["L8H11", "L9H9", "L10H10", "L11H4"]
    seq = load_task("sequence-continuation-gpt2-small")
    assert seq.generator.kind == "pairs" and len(seq.reference_components()) == 25
    assert {e.component for e in seq.reference if e.uncertain} == {"L1H5", "L4H4", "L7H11", "L9H1"}


@pytest.mark.parametrize("kind", ["template", "pairs"])
def test_starters_are_valid_specs_a_model_can_do(kind, tmp_path) -> None:
    spec = spec_from_yaml(starter("mine", kind))
    r = check_task(spec, load_zoo_model("toy-pronoun"), n=32)
    assert r.usable, r.reasons


# --------------------------------------------------------------------- check_task against ground truth
def redraw(spec, slots: list[str]):
    data = spec.model_dump(mode="json")
    data["generator"]["corruption"] = {"redraw": slots, "swap": []}
    return spec.model_validate(data)


def test_check_task_passes_the_zoo_and_fails_corruptions_that_change_nothing() -> None:
    model = load_zoo_model("toy-pronoun")
    spec = load_task("toy-pronoun")
    ok = check_task(spec, model, n=48)
    assert ok.usable and ok.accuracy == 1.0 and ok.flips == 1.0 and ok.gap > 10 * ok.noise_floor
    for slots in (["O"], ["PLACE"], ["VERB"]):  # the model ignores these: no gap
        r = check_task(redraw(spec, slots), model, n=48)
        assert not r.usable and len(r.reasons) == 1 and "noise floor" in r.reasons[0], slots
        assert r.flips == 0.0 and r.accuracy == 1.0
    data = spec.model_dump(mode="json")  # answer and wrong the other way round: a big gap, but never right
    data["generator"]["answer"], data["generator"]["wrong"] = "{S.other}", "{S.group}"
    r = check_task(spec.model_validate(data), model, n=48)
    assert r.reasons == [r.reasons[0]] and "not above chance" in r.reasons[0] and r.accuracy == 0.0


def test_check_task_on_a_random_model_is_unusable() -> None:
    from transformers import AutoModelForCausalLM

    from tools import Model
    from tools.tiny import tiny_config

    spec = load_task("toy-pronoun")
    tok = word_tokenizer(spec.vocabulary())
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny_config("gpt2", vocab_size=len(tok)), attn_implementation="eager")
    r = check_task(spec, Model.from_hf(hf.eval(), tok, name="random"), n=48)
    assert not r.usable and any("noise floor" in x for x in r.reasons)


def test_check_task_reports_too_few_and_no_prompts() -> None:
    model = load_zoo_model("toy-pronoun")
    spec = spec_from_yaml(starter("few", "pairs"))
    data = spec.model_dump(mode="json")
    data["generator"]["items"] = data["generator"]["items"][:4]
    r = check_task(spec.model_validate(data), model, n=16)
    assert not r.usable and r.distinct_prompts == 4 and "too few valid prompts" in r.reasons[0]
    data["generator"]["items"][0]["answer"] = "nobody"  # not in the toy vocabulary
    r = check_task(spec.model_validate(data), model, n=16)
    assert r.prompts == 0 and r.reasons[0].startswith("no prompts: item 0") and r.issues


def test_default_roles_come_from_the_generator() -> None:
    text = starter("x", "template")
    assert "\nroles:" not in text
    assert spec_from_yaml(text).roles == ["S", "O", "END"]
    with pytest.raises(TaskSpecError, match="roles"):
        spec_from_yaml(text.replace("metric: logit_diff", "metric: logit_diff\nroles: [S, END]"))


def test_readme_examples_are_valid_specs() -> None:
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
    specs = {s.generator.kind: s for s in (spec_from_yaml(b, "README.md") for b in blocks)}
    assert set(specs) == {"template", "pairs"}
    assert specs["template"].generator == load_task("toy-pronoun").generator  # the README shows the real one
    from tests.test_tasks import regex_word_tokenizer

    pairs_spec = specs["pairs"]
    b = pairs_spec.make_batch(regex_word_tokenizer(pairs_spec.vocabulary()), 2, seed=0)
    assert b.size == 2 and set(b.positions) == {"IO", "S1", "S2", "END"}
