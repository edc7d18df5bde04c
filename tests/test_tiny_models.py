"""The fixtures are real HF models: they load from a path offline and run."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_model_loads_from_path_and_runs(tiny_model_dir: str) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    ids = torch.tensor([tok("w1 w2 w3")["input_ids"]])
    assert ids.tolist() == [[5, 6, 7]]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, 3, model.config.vocab_size) and torch.isfinite(logits).all()
