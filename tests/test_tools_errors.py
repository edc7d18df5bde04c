"""Bad input gets one clear, one-line error from the project family — never a silent wrong answer."""

from __future__ import annotations

import pytest
import torch

from tools import (
    TaskBatch,
    ablate,
    attention_summary,
    load_model,
    patch,
    patching_sweep,
    run_with_interventions,
    steer,
)
from tools.errors import ArchitectureError, BatchError, ComponentError, InterpAgentError, InterventionError
from tools.model import Model


@pytest.fixture(scope="module")
def model(tiny_model_dirs) -> Model:
    return load_model(tiny_model_dirs["gpt2"], device="cpu")


@pytest.fixture(scope="module")
def batch() -> TaskBatch:
    return TaskBatch(clean_ids=torch.tensor([[5, 6, 7, 8]]), corrupt_ids=torch.tensor([[5, 9, 7, 8]]),
                     answer_ids=torch.tensor([10]), wrong_ids=torch.tensor([11]))


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert isinstance(err.value, InterpAgentError) and "\n" not in msg and " — " in msg
    return msg


def test_wrong_component_name(model: Model, batch: TaskBatch) -> None:
    with pytest.raises(ComponentError) as err:
        patch(model, batch, ["L0X1"])
    assert "'L0X1'" in one_line(err)


def test_head_index_out_of_range(model: Model, batch: TaskBatch) -> None:
    with pytest.raises(ComponentError) as err:
        ablate(model, batch, ["L1H4"], method="zero")
    assert "head index 4" in one_line(err) and "0..3" in str(err.value)


def test_site_the_architecture_lacks(model: Model, batch: TaskBatch) -> None:
    with pytest.raises(ComponentError) as err:
        patching_sweep(model, batch, components=["MLP2"])
    assert "layer 2 out of range" in one_line(err)
    with pytest.raises(ComponentError) as err:
        model.components("neurons")
    one_line(err)


def test_mismatched_clean_corrupt_lengths(model: Model) -> None:
    with pytest.raises(BatchError) as err:
        TaskBatch(clean_ids=torch.tensor([[5, 6, 7]]), corrupt_ids=torch.tensor([[5, 6]]))
    assert "differ in shape" in one_line(err)
    with pytest.raises(BatchError) as err:
        ablate(model, torch.tensor([[5, 6, 7]]), ["MLP0"], method="mean", reference=torch.tensor([[5, 6]]))
    assert "length" in one_line(err)


def test_patch_needs_corrupt_prompts(model: Model) -> None:
    with pytest.raises(BatchError) as err:
        patch(model, TaskBatch(clean_ids=torch.tensor([[5, 6]])), ["MLP0"])
    assert "corrupt" in one_line(err)


def test_nan_in_steering_vector_and_values(model: Model, batch: TaskBatch) -> None:
    v = torch.zeros(model.d_model)
    v[3] = float("nan")
    with pytest.raises(InterventionError) as err:
        steer(model, batch.clean_ids, "resid_post0", v)
    assert "NaN" in one_line(err)
    with pytest.raises(InterventionError):
        run_with_interventions(model, batch.clean_ids, {"MLP0": v})
    with pytest.raises(InterventionError) as err:
        steer(model, batch.clean_ids, "resid_post0", torch.zeros(7))
    assert "shape" in one_line(err)


def test_unknown_method_direction_and_role(model: Model, batch: TaskBatch) -> None:
    with pytest.raises(InterventionError):
        ablate(model, batch, ["MLP0"], method="median")
    with pytest.raises(InterventionError):
        patch(model, batch, ["MLP0"], direction="sideways")
    with pytest.raises(BatchError) as err:
        patch(model, batch, ["MLP0"], positions="IO")
    assert "no position named 'IO'" in one_line(err)
    with pytest.raises(BatchError):
        attention_summary(model, batch, "L0H0", query="S2")


def test_unknown_architecture(tmp_path) -> None:
    from transformers import GPTJConfig

    GPTJConfig(n_layer=1, n_embd=32, n_head=2, vocab_size=64, rotary_dim=8).save_pretrained(tmp_path)
    with pytest.raises(ArchitectureError) as err:
        load_model(tmp_path)
    msg = one_line(err)
    assert "'gptj'" in msg and "GPT-2" in msg and "Llama" in msg and "Adapter" in msg


def test_missing_model_path() -> None:
    with pytest.raises(ArchitectureError) as err:
        load_model("/definitely/not/here")
    assert "cannot load model" in one_line(err)


def test_to_tokens_needs_equal_lengths(model: Model) -> None:
    assert model.to_tokens(["w1 w2", "w3 w4"]).tolist() == [[5, 6], [7, 8]]
    with pytest.raises(BatchError) as err:
        model.to_tokens(["w1 w2", "w3"])
    assert "different lengths" in one_line(err)


def test_load_model_dtype_and_fingerprint(tiny_model_dirs) -> None:
    m16 = load_model(tiny_model_dirs["llama"], device="cpu", dtype=torch.bfloat16)
    m32 = load_model(tiny_model_dirs["llama"], device="cpu")
    assert m16.dtype == torch.bfloat16 and m32.dtype == torch.float32
    assert m16.fingerprint() != m32.fingerprint()
    assert load_model(tiny_model_dirs["llama"], device="cpu").fingerprint() == m32.fingerprint()
