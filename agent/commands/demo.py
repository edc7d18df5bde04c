"""``interp-agent demo``: the most complete offline investigation that exists (what `make demo` runs)."""

from __future__ import annotations

import tempfile
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: Annotated[str | None, typer.Option("--out", help="Directory for runs (default: $INTERP_AGENT_HOME/runs).")] = None,
    ) -> None:
        """Run the offline demo: load a tiny GPT-2 from disk and show its next-token predictions."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from agent.cli import console
        from tools.tiny import make_tiny_model

        path = make_tiny_model("gpt2", tempfile.mkdtemp(prefix="interp-agent-demo-"))
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
        ids = torch.tensor([tok("w1 w2 w3")["input_ids"]])
        with torch.no_grad():
            logits = model(ids).logits[0, -1]
        top = torch.topk(logits, 3)
        console.print(f"tiny GPT-2 at {path}: top next tokens after 'w1 w2 w3':")
        for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            console.print(f"  {tok.decode([i])!s:>6}  logit {v:+.3f}")
