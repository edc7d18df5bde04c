"""``interp-agent tasks check`` / ``tasks new`` on every shipped task and on hand-written files, and the new
behaviour end to end: ``investigate`` on the toy-pronoun zoo model via keyword framing and via ``--task FILE``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import main
from agent.log import read_events
from evals.tasks import list_tasks
from evals.zoo import list_zoo

ZOO = {e.name for e in list_zoo()}
SPECS = {s.name: s for s in list_tasks()}


@pytest.fixture(scope="module")
def random_models(tmp_path_factory) -> dict[str, str]:
    """For each task defined for a model we do not have offline (GPT-2 small...): a random-init tiny GPT-2
    whose GPT-2-like word tokenizer covers the task's words (so the task tokenises, and the model cannot do it)."""
    import torch
    from transformers import AutoModelForCausalLM

    from tests.test_tasks import regex_word_tokenizer
    from tools.tiny import tiny_config

    out = {}
    for name, spec in SPECS.items():
        if spec.model in ZOO:
            continue
        words = spec.vocabulary() or [f"w{i}" for i in range(200)]
        tok = regex_word_tokenizer(words)
        path = tmp_path_factory.mktemp(name)
        torch.manual_seed(0)
        hf = AutoModelForCausalLM.from_config(tiny_config("gpt2", vocab_size=len(tok)), attn_implementation="eager")
        hf.save_pretrained(path)
        tok.save_pretrained(path)
        out[name] = str(path)
    return out


@pytest.mark.parametrize("name", sorted(SPECS))
def test_tasks_check_on_every_shipped_task(name, random_models, capsys) -> None:
    spec = SPECS[name]
    if spec.model in ZOO:  # its own zoo model does the task: usable
        code = main(["--json", "tasks", "check", name, "--prompts", "32"])
        out = json.loads(capsys.readouterr().out)
        assert code == 0 and out["usable"] and out["reasons"] == [], out["reasons"]
        assert out["gap"] > out["noise_floor"] and out["accuracy"] > out["chance"]
    else:  # a random model over its words: the check runs and says why the task is unusable, exit 2
        code = main(["--json", "tasks", "check", name, "--model", random_models[name], "--prompts", "32"])
        cap = capsys.readouterr()
        out = json.loads(cap.out)
        assert code == 2 and not out["usable"] and out["prompts"] == 32, out["reasons"]
        err = cap.err.strip().splitlines()[-1]
        assert err.startswith(f"error: task {name} is unusable on") and ("noise floor" in err or "chance" in err)


def test_tasks_check_prints_one_table(capsys) -> None:
    assert main(["tasks", "check", "toy-pronoun", "--prompts", "16", "--min-prompts", "8"]) == 0
    out = capsys.readouterr().out
    for row in ("prompts", "clean logit_diff", "corrupt logit_diff", "gap", "accuracy", "flip",
                "tokenisation warnings", "usable"):
        assert row in out, row


def test_tasks_new_writes_starters_that_check(tmp_path, capsys) -> None:
    for kind in ("template", "pairs"):
        path = tmp_path / f"mine-{kind}.yaml"
        assert main(["tasks", "new", f"mine-{kind}", "--kind", kind, "--out", str(path)]) == 0
        assert "tasks check" in capsys.readouterr().out
        text = path.read_text()
        assert text.startswith("# Task spec") and f"kind: {kind}" in text and text.count("#") > 8
        assert main(["--json", "tasks", "check", str(path), "--prompts", "32"]) == 0
        assert json.loads(capsys.readouterr().out)["usable"]
    assert main(["tasks", "new", "mine-template", "--out", str(tmp_path / "mine-template.yaml")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["tasks", "new", "Bad Name"]) == 2
    assert "lower-case" in capsys.readouterr().err


HAND_WRITTEN = """\
name: my-subject-pronoun
description: Which pronoun follows a sentence whose subject is a name (hand-written for the tests).
model: toy-pronoun
question_keywords: [subject pronoun]
generator:
  kind: template
  templates:
    - "yesterday {A} {V} {B} in the {P} so"
    - "{A} {V} {B} at the {P} and then"
  slots:
    A: {he: [Tom, Max, Sam], she: [Emma, Lily, Jane]}
    B: [Paul, Rose, Dan, Lucy]
    V: [helped, thanked]
    P: [beach, office]
  answer: "{A.group}"
  wrong: "{A.other}"
  corruption: {redraw: [A]}
"""


def test_tasks_check_on_a_hand_written_template_file(tmp_path, capsys) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(HAND_WRITTEN)
    assert main(["--json", "tasks", "check", str(path), "--prompts", "32"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["usable"] and out["flips"] == 1.0 and out["issues"] == []
    # the same file with a corruption the model ignores: exit 2, and the reason names the noise floor
    path.write_text(HAND_WRITTEN.replace("redraw: [A]", "redraw: [P]"))
    assert main(["tasks", "check", str(path), "--prompts", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "below the noise floor" in err
    assert main(["tasks", "check", str(path), "--model", "/no/such/model"]) == 2
    assert "cannot load model" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ end to end
def _sandbox_ok() -> bool:
    from sandbox.local import isolation_problem

    return isolation_problem() is None


QUESTION = "Which heads decide whether the pronoun is he or she?"


def test_keyword_framing_maps_the_new_behaviour_to_its_task() -> None:
    from agent.framing import frame_question

    fr = frame_question(QUESTION)
    assert (fr.task, fr.model) == ("toy-pronoun", "toy-pronoun") and "pronoun" in fr.matched
    fr = frame_question("How does GPT-2 complete an acronym's next capital letter?")
    assert (fr.task, fr.model) == ("acronyms-gpt2-small", "gpt2")
    fr = frame_question("Which heads continue the number sequence with the next number?")
    assert fr.task == "sequence-continuation-gpt2-small"


@pytest.mark.slow
@pytest.mark.skipif(not _sandbox_ok(), reason="no sandbox isolation (bubblewrap) on this machine")
def test_investigate_the_new_behaviour_by_keywords_and_by_task_file(tmp_path, capsys) -> None:
    out = tmp_path / "runs"
    args = ["--planner", "offline", "--out", str(out), "--prompts", "8", "--max-components", "2"]
    assert main(["--json", "investigate", QUESTION, *args]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["status"] == "completed" and len(res["conclusions"]) == 2
    started = read_events(Path(res["run_dir"]))[0]
    assert (started.task, started.model) == ("toy-pronoun", "toy-pronoun")

    spec = tmp_path / "hand" / "mine.yaml"  # under /tmp, which the sandbox hides: the spec must travel inline
    spec.parent.mkdir()
    spec.write_text(HAND_WRITTEN)
    assert main(["--json", "investigate", "Which heads pick the subject's pronoun?", "--task", str(spec), *args]) == 0
    res = json.loads(capsys.readouterr().out)
    run_dir = Path(res["run_dir"])
    events = read_events(run_dir)
    assert res["status"] == "completed" and len(res["conclusions"]) == 2
    assert events[0].task == str(spec.resolve()) and events[0].model == "toy-pronoun"
    results = [e for e in events if e.kind == "execution_result"]
    assert results and all(e.status == "ok" for e in results)
    spec.unlink()  # the run replays from its log alone
    assert main(["replay", str(run_dir), "--verify"]) == 0, capsys.readouterr()
