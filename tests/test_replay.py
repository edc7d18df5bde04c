"""``replay --verify``: a recorded run re-computes clean; a tampered, corrupt, newer-schema or incomplete
run fails naming the event; ``--planner-replay`` compares tool calls and conclusions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.cli import main
from agent.replay import ReplayError, compare_runs, load_events, planner_replay, verify
from agent.replay.compare import compare_results, diff_values, numbers_close, texts_match
from tests.test_replay_helpers import fresh_copy, recorded_run_dir, tamper


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return recorded_run_dir(tmp_path_factory)


def _exec_seqs(run_dir: Path) -> dict[str, int]:
    """tool-call name → seq of its first execution_result."""
    events = load_events(run_dir)
    names = {e.call_id: e.name for e in events if e.kind == "tool_call"}
    out: dict[str, int] = {}
    for e in events:
        if e.kind == "execution_result":
            out.setdefault(names[e.call_id], e.seq)
    return out


# ------------------------------------------------------------------------------ tolerance rules (pure)


def test_numbers_close_boundaries():
    assert numbers_close(100.0, 100.0 + 0.9e-2)  # within rtol 1e-4 * 100 + atol
    assert not numbers_close(100.0, 100.0 + 1.1e-2)
    assert numbers_close(0.0, 9e-7) and not numbers_close(0.0, 2e-6)  # atol near zero
    assert not numbers_close(float("inf"), 1e308) and numbers_close(float("-inf"), float("-inf"))


def test_texts_normalise_addresses_times_durations_but_not_values():
    assert texts_match("<object object at 0x7f1a2b3c4d5e>", "<object object at 0x7fffeeddccbb>")
    assert texts_match("done 2026-11-21T10:00:00Z in 3.2 s", "done 2027-01-01T09:59:59Z in 0.4 s")
    assert not texts_match("tensor([1.0, 2.0])", "tensor([1.0, 2.5])")
    assert not texts_match("L1H0 is a name mover", "L1H0 is a copy suppressor")


def test_diff_values_recurses_and_names_paths():
    logged = {"effects": {"L0H0": 0.5, "L1H0": [1.0, 2.0]}, "n": 3, "ok": True}
    now = {"effects": {"L0H0": 0.5 + 1e-9, "L1H0": [1.0, 2.1]}, "n": 4, "ok": True}
    assert [d.path for d in diff_values(logged, now)] == ["data.effects.L1H0[1]", "data.n"]
    assert [d.path for d in diff_values([1, 2], [1, 2, 3])] == ["data (length)"]


def test_compare_results_ignores_duration_and_traceback_paths():
    a = {"status": "ok", "stdout": "x\n", "duration_s": 1.0, "traceback": "File /a/b.py", "data": {"v": 1.0}}
    b = {"status": "ok", "stdout": "x\n", "duration_s": 9.0, "traceback": ["File /c/d.py"], "data": {"v": 1.0}}
    assert compare_results(1, "run_code", a, b) == []
    b["status"] = "error"
    assert [m.path for m in compare_results(1, "run_code", a, b)] == ["status"]


# ------------------------------------------------------------------------------ verify on a real run


def test_recorded_run_verifies_clean(run_dir, capsys):
    rep = verify(run_dir)
    assert rep.ok, rep.mismatches
    assert rep.cells == 6
    assert rep.original_wall_s and rep.ratio and rep.ratio > 0
    code = main(["replay", str(run_dir), "--verify"])
    out = capsys.readouterr().out
    assert code == 0
    assert "verified" in out and "6 cells" in out and "ratio" in out
    print(f"verification {rep.verify_s:.1f} s vs original run {rep.original_wall_s:.1f} s (ratio {rep.ratio:.2f})")


def test_tampered_number_fails_and_names_the_event(run_dir, tmp_path, capsys):
    bad = fresh_copy(run_dir, tmp_path)
    seq = _exec_seqs(bad)["attribution_sweep"]
    logged = json.loads((bad / "events.jsonl").read_text().splitlines()[seq])["data"]["effects"]["L1H0"]
    tamper(bad, seq, ["effects", "L1H0"], logged + 0.5)
    code = main(["--json", "replay", str(bad), "--verify"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    mism = out["verify"]["mismatches"]
    assert [(m["seq"], m["call"], m["path"]) for m in mism] == [(seq, "attribution_sweep", "data.effects.L1H0")]
    # the rich table (default output) names the seq too
    code = main(["replay", str(bad), "--verify"])
    text = capsys.readouterr().out
    assert code == 1 and "FAILED" in text and str(seq) in text and "data.effects.L1H0" in text


def test_corrupt_line_names_the_event(run_dir, tmp_path, capsys):
    bad = fresh_copy(run_dir, tmp_path)
    lines = (bad / "events.jsonl").read_text().splitlines()
    lines[3] = lines[3][: len(lines[3]) // 2]  # a torn line that is not the last one
    (bad / "events.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ReplayError, match=r"event seq 3 .*corrupt line"):
        verify(bad)
    assert main(["replay", str(bad), "--verify"]) == 2
    assert "event seq 3" in capsys.readouterr().err


def test_newer_schema_is_refused(run_dir, tmp_path):
    bad = fresh_copy(run_dir, tmp_path)
    lines = (bad / "events.jsonl").read_text().splitlines()
    obj = json.loads(lines[5])
    obj["schema_version"] = "2.0"
    lines[5] = json.dumps(obj)
    (bad / "events.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ReplayError, match=r"event seq 5 .*newer interp-agent.*upgrade"):
        load_events(bad)


def test_missing_artifact_names_the_event(run_dir, tmp_path):
    bad = fresh_copy(run_dir, tmp_path)
    events = load_events(bad)
    with_files = [e for e in events if e.kind == "execution_result" and e.outputs]
    assert with_files, "the recorded run should have logged a figure file"
    shutil.rmtree(bad / "figures")
    with pytest.raises(ReplayError, match=rf"event seq {with_files[0].seq} .*missing.*restore"):
        verify(bad)


def test_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "nope"), "--verify"]) == 2
    assert "no run" in capsys.readouterr().err


# ------------------------------------------------------------------------------ planner replay


def test_compare_runs_same_and_different(run_dir):
    events = load_events(run_dir)
    assert compare_runs(events, events) == []
    other = [e.model_copy(update={"role": "name mover"}) if e.kind == "conclusion" and e.component == "L1H0" else e
             for e in events]
    assert compare_runs(events, other) == ["conclusion L1H0: logged 'induction-ish mover' vs now 'name mover'"]


def test_planner_replay_with_a_runner(run_dir, tmp_path):
    def same(run_dir: Path, out_dir: Path) -> Path:
        return fresh_copy(run_dir, Path(out_dir))

    rep = planner_replay(run_dir, out_dir=tmp_path, runner=same)
    assert rep.ok and rep.calls_logged == rep.calls_now == 6

    def fewer(run_dir: Path, out_dir: Path) -> Path:
        dst = Path(out_dir) / "fewer"
        dst.mkdir()
        lines = (run_dir / "events.jsonl").read_text().splitlines()
        (dst / "events.jsonl").write_text("\n".join(lines[:5]) + "\n")
        return dst

    rep = planner_replay(run_dir, out_dir=tmp_path, runner=fewer)
    assert not rep.ok
    assert "number of tool calls: logged 6 vs now 2" in rep.differences
