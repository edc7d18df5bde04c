"""Tiny random-init models of real Hugging Face architectures, for tests, shape checks and benchmarks.

They are genuine ``transformers`` models (GPT-2, GPT-NeoX/Pythia, Llama) saved with
``save_pretrained`` beside an offline word-level tokenizer, so loading them exercises exactly the code
path a user's real checkpoint takes.

>>> import tempfile
>>> path = make_tiny_model("gpt2", tempfile.mkdtemp())
>>> {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in path.iterdir()}
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from tools.errors import ArchitectureError

TinyArch = Literal["gpt2", "neox", "llama"]
TINY_ARCHS: tuple[str, ...] = ("gpt2", "neox", "llama")
SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def word_tokenizer(words: list[str], max_length: int = 512):
    """A ``PreTrainedTokenizerFast`` over a fixed word list (whitespace split), fully offline.

    Ids 0-3 are ``<pad> <bos> <eos> <unk>``; word *i* gets id ``4 + i``.

    >>> tok = word_tokenizer(["Mary", "John"])
    >>> tok("John Mary")["input_ids"]
    [5, 4]
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in words:
        if w not in vocab:
            vocab[w] = len(vocab)
    tk = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        model_max_length=max_length,
    )


def tiny_config(arch: TinyArch, vocab_size: int = 64, n_layers: int = 2, n_heads: int = 4, d_model: int = 64,
                n_positions: int = 64):
    """A ``transformers`` config for a tiny model of ``arch`` (eager attention, small-vocab special ids)."""
    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "gpt2":
        from transformers import GPT2Config

        cfg = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_layer=n_layers, n_head=n_heads,
                         n_embd=d_model, **ids)
    elif arch == "neox":
        from transformers import GPTNeoXConfig

        cfg = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=n_layers,
                            num_attention_heads=n_heads, intermediate_size=4 * d_model,
                            max_position_embeddings=n_positions, rotary_pct=0.25, **ids)
    elif arch == "llama":
        from transformers import LlamaConfig

        cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model,
                          num_hidden_layers=n_layers, num_attention_heads=n_heads,
                          num_key_value_heads=max(1, n_heads // 2), max_position_embeddings=n_positions, **ids)
    else:
        raise ArchitectureError(f"no tiny model for architecture {arch!r}", fix=f"use one of {TINY_ARCHS}")
    cfg._attn_implementation = "eager"
    return cfg


def make_tiny_model(arch: TinyArch, path: str | Path, seed: int = 0, **config_kwargs) -> Path:
    """Build a random-init model of ``arch``, save it with its tokenizer to ``path``; return the path.

    Weights are drawn with ``torch.manual_seed(seed)`` so the same call gives the same model.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(arch, **config_kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    # Random-init biases are zero in HF; give them values so tests exercise the bias handling.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.02)
    model.save_pretrained(path)
    words = [f"w{i}" for i in range(cfg.vocab_size - len(SPECIAL_TOKENS))]
    word_tokenizer(words).save_pretrained(path)
    return path
