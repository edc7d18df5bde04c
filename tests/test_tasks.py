"""Task specs: validation, errors naming file/field/problem, generator invariants, real-model tokenisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evals.tasks import (
    ReferenceEntry,
    TaskSpecError,
    TokenizationError,
    list_tasks,
    load_task,
    map_reference,
)
from evals.tasks.generators import split_words
from evals.tasks.metrics import logit_diff, prob_diff_fn
from tools.components import Component
from tools.tiny import word_tokenizer

DATA = Path(__file__).resolve().parents[1] / "evals" / "tasks" / "data"
EXPECTED = {"toy-ioi", "toy-induction", "toy-greater-than", "planted-ioi", "planted-induction", "planted-twin-induction",
            "ioi-gpt2-small", "greater-than-gpt2-small", "induction-gpt2-small", "docstring-attn-only-4l"}


def regex_word_tokenizer(words: list[str]):
    """A GPT-2-like offline tokenizer: word level, split like a regex pre-tokenizer (punctuation apart,
    numbers in two-digit chunks, so "1732" is "17" "32" as in GPT-2; a capital letter not followed by a
    lower-case one is a token of its own, so the acronym "(CD" is "(" "C" "D")."""
    from tokenizers import Regex, Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Sequence, Split, Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<unk>": 1}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = Sequence([Whitespace(), Split(Regex(r"\d\d"), behavior="isolated"),
                                 Split(Regex(r"[A-Z](?![a-z])"), behavior="isolated")])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<unk>")


def byte_bpe_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE (GPT-2's scheme: leading-space tokens) trained offline on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


# ------------------------------------------------------------------------------ loading and validation
def test_builtin_specs_load_and_validate() -> None:
    specs = {s.name: s for s in list_tasks()}
    assert set(specs) >= EXPECTED
    for name, s in specs.items():
        assert (DATA / f"{name}.yaml").is_file()
        assert load_task(name) == s
        assert s.question_keywords, name
        for e in s.reference:
            assert str(Component.parse(e.component)) == e.component
            assert e.source and e.explanation and e.role


def test_published_circuits_use_the_grammar_and_cite_sources() -> None:
    ioi = load_task("ioi-gpt2-small")
    roles = ioi.reference_roles()
    assert roles["name mover"] == ["L9H9", "L9H6", "L10H0"]
    assert set(roles["negative name mover"]) == {"L10H7", "L11H10"}
    assert set(roles["s-inhibition"]) == {"L7H3", "L7H9", "L8H6", "L8H10"}
    assert set(roles["previous token"]) == {"L2H2", "L4H11"}
    assert len(roles["backup name mover"]) == 8
    gt = load_task("greater-than-gpt2-small").reference_roles()
    assert gt["comparison"] == ["MLP8", "MLP9", "MLP10", "MLP11"] and len(gt["year mover"]) == 8
    doc = load_task("docstring-attn-only-4l")
    assert {e.component for e in doc.reference if not e.uncertain} == {"L3H0", "L3H6"}
    for name in ("ioi-gpt2-small", "greater-than-gpt2-small", "induction-gpt2-small", "docstring-attn-only-4l"):
        assert load_task(name).sources


MINIMAL = """name: toy-ioi
description: d
model: toy-ioi
metric: logit_diff
roles: [IO, S1, S2, END]
generator:
  kind: ioi
  names: [Ann, Bob, Cat]
  templates: ["when {IO} and {S} went , {S} gave to"]
reference: []
"""


def test_minimal_spec_loads(tmp_path) -> None:
    assert load_task(_write(tmp_path, MINIMAL)).generator.names == ["Ann", "Bob", "Cat"]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


def test_malformed_spec_is_one_error_naming_file_field_and_problem(tmp_path) -> None:
    good = MINIMAL
    bad = good.replace("reference: []", "reference:\n  - {component: '9.9', role: r, explanation: x, source: s}")
    p = _write(tmp_path, bad)
    with pytest.raises(TaskSpecError) as ei:
        load_task(p)
    msg = str(ei.value)
    assert str(p) in msg and "reference.0.component" in msg and "cannot parse component '9.9'" in msg
    assert len(msg.splitlines()) == 1

    p = _write(tmp_path, good.replace("metric: logit_diff", "metric: bleu"))
    with pytest.raises(TaskSpecError, match=r"field 'metric'"):
        load_task(p)
    p = _write(tmp_path, good.replace("name: toy-ioi\n", ""))
    with pytest.raises(TaskSpecError, match=r"field 'name': Field required"):
        load_task(p)
    p = _write(tmp_path, good.replace("roles: [IO, S1, S2, END]", "roles: [IO, END]"))
    with pytest.raises(TaskSpecError, match="roles"):
        load_task(p)
    p = _write(tmp_path, good.replace("{IO} and {S} went", "{IO} and {IO} went", 1))
    with pytest.raises(TaskSpecError, match=r"generator.ioi.*exactly one \{IO\}"):
        load_task(p)
    p = _write(tmp_path, "name: [unclosed\n")
    with pytest.raises(TaskSpecError, match="cannot parse task spec"):
        load_task(p)
    with pytest.raises(TaskSpecError, match="no task named 'nope'.*toy-ioi"):
        load_task("nope")


# ----------------------------------------------------------------------------------- generators
@pytest.fixture(scope="module")
def toy_toks() -> dict:
    return {n: word_tokenizer(load_task(n).vocabulary()) for n in ("toy-ioi", "toy-induction", "toy-greater-than")}


def test_batches_are_deterministic_in_the_seed(toy_toks) -> None:
    spec = load_task("toy-ioi")
    a, b = spec.make_batch(toy_toks["toy-ioi"], 16, seed=3), spec.make_batch(toy_toks["toy-ioi"], 16, seed=3)
    c = spec.make_batch(toy_toks["toy-ioi"], 16, seed=4)
    assert torch.equal(a.clean_ids, b.clean_ids) and torch.equal(a.corrupt_ids, b.corrupt_ids)
    assert not torch.equal(a.clean_ids, c.clean_ids)
    with pytest.raises(TaskSpecError):
        spec.make_batch(toy_toks["toy-ioi"], 0, seed=0)


def test_ioi_batch_invariants(toy_toks) -> None:
    b = load_task("toy-ioi").make_batch(toy_toks["toy-ioi"], 64, seed=0)
    i = torch.arange(b.size)
    ids, cor = b.clean_ids, b.corrupt_ids
    assert torch.equal(ids[i, b.positions["IO"]], b.answer_ids)
    assert torch.equal(ids[i, b.positions["S1"]], b.wrong_ids)
    assert torch.equal(ids[i, b.positions["S2"]], b.wrong_ids)
    assert torch.equal(b.end, torch.full((b.size,), b.seq_len - 1))
    assert (ids[:, 0] == toy_toks["toy-ioi"].bos_token_id).all()
    # flip corruption: only S2 changes, to the IO name
    diff = ids != cor
    assert torch.equal(diff.sum(1), torch.ones(b.size, dtype=torch.long))
    assert torch.equal(cor[i, b.positions["S2"]], b.answer_ids)
    # both orders occur (ABBA and BABA)
    assert {bool(x) for x in b.positions["IO"] < b.positions["S1"]} == {True, False}


def test_induction_batch_invariants(toy_toks) -> None:
    b = load_task("toy-induction").make_batch(toy_toks["toy-induction"], 64, seed=1)
    i = torch.arange(b.size)
    ids = b.clean_ids
    assert b.seq_len == 28
    assert torch.equal(ids[i, b.positions["MATCH"]], ids[i, b.end])
    assert torch.equal(ids[i, b.positions["NEXT"]], b.answer_ids)
    assert torch.equal(b.positions["NEXT"], b.positions["MATCH"] + 1)
    assert torch.equal(b.corrupt_ids[i, b.positions["NEXT"]], b.wrong_ids)
    assert torch.equal((ids != b.corrupt_ids).sum(1), torch.ones(b.size, dtype=torch.long))
    for r in range(b.size):  # the END token occurs exactly once before END; the wrong token never in clean
        row = ids[r].tolist()
        assert row[: b.seq_len - 1].count(row[-1]) == 1
        assert int(b.wrong_ids[r]) not in row


def test_greater_than_batch_invariants(toy_toks) -> None:
    tok = toy_toks["toy-greater-than"]
    spec = load_task("toy-greater-than")
    b = spec.make_batch(tok, 64, seed=2)
    i = torch.arange(b.size)
    yy = [int(tok.convert_ids_to_tokens(int(t))) for t in b.clean_ids[i, b.positions["YY"]]]
    assert [int(tok.convert_ids_to_tokens(int(t))) for t in b.answer_ids] == [y + 1 for y in yy]
    assert [int(tok.convert_ids_to_tokens(int(t))) for t in b.wrong_ids] == yy
    assert all(2 <= y <= 97 for y in yy)
    assert {tok.convert_ids_to_tokens(int(t)) for t in b.corrupt_ids[i, b.positions["YY"]]} == {"01"}
    assert torch.equal(b.clean_ids[i, b.positions["XX1"]], b.clean_ids[i, b.end])


def test_metrics_on_constructed_logits(toy_toks) -> None:
    tok = toy_toks["toy-greater-than"]
    spec = load_task("toy-greater-than")
    b = spec.make_batch(tok, 4, seed=0)
    years = spec.generator.year_token_ids(tok)
    logits = torch.full((b.size, b.seq_len, len(tok)), -1e4)
    yy = [int(tok.convert_ids_to_tokens(int(t))) for t in b.clean_ids[torch.arange(b.size), b.positions["YY"]]]
    for r, y in enumerate(yy):  # all mass on years above YY
        logits[r, -1, [years[v] for v in range(y + 1, 100)]] = 0.0
    assert abs(float(prob_diff_fn(years)(logits, b)) - 1.0) < 1e-5
    assert float(spec.metric_fn(tok)(logits, b)) == pytest.approx(1.0, abs=1e-5)
    ld = logits.clone()
    ld[torch.arange(b.size), -1, b.answer_ids] = 2.0
    ld[torch.arange(b.size), -1, b.wrong_ids] = -1.0
    assert float(logit_diff(ld, b)) == pytest.approx(3.0)


# ------------------------------------------------------------------------ real-model (GPT-2-like) specs
@pytest.mark.parametrize("name", ["ioi-gpt2-small", "greater-than-gpt2-small", "docstring-attn-only-4l"])
def test_real_specs_make_batches_with_a_regex_word_tokenizer(name) -> None:
    spec = load_task(name)
    tok = regex_word_tokenizer(spec.vocabulary())
    b = spec.make_batch(tok, 32, seed=0)
    assert b.size == 32 and set(b.positions) == set(spec.roles)
    assert (b.clean_ids[:, 0] == tok.bos_token_id).all()
    i = torch.arange(b.size)
    if name == "ioi-gpt2-small":
        assert torch.equal(b.clean_ids[i, b.positions["IO"]], b.answer_ids)
        assert torch.equal(b.clean_ids[i, b.positions["S2"]], b.wrong_ids)
        # ABC corruption: three names differ from the clean ones at S2
        assert not torch.equal(b.corrupt_ids[i, b.positions["S2"]], b.wrong_ids)
    if name == "docstring-attn-only-4l":
        assert torch.equal(b.clean_ids[i, b.positions["C_def"]], b.answer_ids)
        assert torch.equal(b.clean_ids[i, b.positions["A_def"]], b.clean_ids[i, b.positions["A_doc"]])
        assert torch.equal(b.corrupt_ids[i, b.positions["C_def"]], b.wrong_ids)
        assert b.prompts[0].startswith("def ") and b.prompts[0].rstrip().endswith(":param")


def test_induction_spec_draws_from_the_tokenizer_vocabulary() -> None:
    spec = load_task("induction-gpt2-small")
    assert spec.generator.tokens is None
    tok = regex_word_tokenizer([f"w{i}" for i in range(200)])
    b = spec.make_batch(tok, 8, seed=0)
    assert b.seq_len == 48 and int(b.clean_ids[:, 1:].min()) >= 2  # specials never drawn


def test_ioi_with_a_byte_level_bpe_uses_leading_space_tokens() -> None:
    spec = load_task("ioi-gpt2-small")
    g = spec.generator
    texts = [t.replace("{IO}", n).replace("{S}", m).replace("{PLACE}", p).replace("{OBJECT}", o)
             for t in g.templates for n in g.names for m in g.names[:3] for p in g.fillers["PLACE"][:2]
             for o in g.fillers["OBJECT"][:2]]
    tok = byte_bpe_tokenizer(texts, vocab_size=800)
    b = spec.make_batch(tok, 16, seed=0)
    i = torch.arange(b.size)
    assert torch.equal(b.clean_ids[i, b.positions["IO"]], b.answer_ids)
    assert all(tok.convert_ids_to_tokens(int(t)).startswith("Ġ") for t in b.answer_ids)  # " Name"


def test_multi_token_words_raise_a_clear_error() -> None:
    spec = load_task("ioi-gpt2-small")
    tok = byte_bpe_tokenizer(["a b c d e f g h"], vocab_size=270)  # names split into bytes
    with pytest.raises(TokenizationError, match="not a single token") as ei:
        spec.make_batch(tok, 4, seed=0)
    assert "single tokens" in str(ei.value)
    toy = load_task("toy-ioi")
    words = [w for w in toy.vocabulary() if w not in toy.generator.names]
    with pytest.raises(TokenizationError, match="not in the tokenizer's vocabulary"):
        toy.make_batch(word_tokenizer(words), 4, seed=0)


def test_vocabulary_covers_every_prompt() -> None:
    for name in ("toy-ioi", "toy-greater-than", "docstring-attn-only-4l", "ioi-gpt2-small"):
        spec = load_task(name)
        vocab = set(spec.vocabulary())
        b = spec.make_batch(regex_word_tokenizer(sorted(vocab)), 16, seed=5)
        assert all(set(split_words(p)) <= vocab for p in b.prompts)


# ------------------------------------------------------------------------------- reference mapping
def test_reference_maps_through_a_head_permutation() -> None:
    spec = load_task("ioi-gpt2-small")
    mapping = {Component.parse("L9H9"): Component.parse("L9H6"), Component.parse("L9H6"): Component.parse("L9H9")}
    mapped = spec.with_mapping(mapping)
    roles = {e.component: e.role for e in mapped.reference}
    assert roles["L9H6"] == "name mover" and roles["L9H9"] == "name mover"
    assert [e.component for e in mapped.reference][:2] == ["L9H6", "L9H9"]
    assert spec.reference[0].component == "L9H9"  # the original is unchanged (frozen)
    entries = [ReferenceEntry(component="L0H0", role="a", explanation="x", source="s")]
    assert map_reference(entries, {"L0H0": "L0H2"})[0].component == "L0H2"
    with pytest.raises(TaskSpecError, match="one-to-one"):
        map_reference(entries, {"L0H0": "L0H2", "L0H1": "L0H2"})
