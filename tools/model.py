"""Loading a Hugging Face causal LM and describing where its components live.

A :class:`Model` wraps the HF model, its tokenizer and an :class:`Adapter`: a small declarative table
from component kind to module path (embedding output, block, attention output projection, MLP, final
norm, unembedding) plus how a head's query/key/value and output weights are laid out. Supported
families: GPT-2 (``gpt2``), GPT-NeoX / Pythia (``neox``) and Llama-like (``llama``: Llama, Mistral,
Qwen2). To add a family, write an ``Adapter`` for it and register its HF ``model_type`` in
:data:`MODEL_TYPES`.

>>> import tempfile
>>> from tools.tiny import make_tiny_model
>>> m = load_model(make_tiny_model("gpt2", tempfile.mkdtemp()))
>>> m.arch, m.n_layers, m.n_heads, m.d_head, m.d_model
('gpt2', 2, 4, 16, 64)
>>> [str(c) for c in m.components("heads")][:3]
['L0H0', 'L0H1', 'L0H2']
>>> m(m.to_tokens(["w1 w2 w3"])).shape
torch.Size([1, 3, 64])
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from tools.components import Component
from tools.errors import ArchitectureError, BatchError, ComponentError

Arch = Literal["gpt2", "neox", "llama"]


@dataclass(frozen=True)
class Adapter:
    """Where one architecture family keeps its parts (module paths relative to the HF model).

    Block-relative paths (``attn``, ``o_proj``, ``mlp``, ``ln_attn``, ``qkv``...) are looked up under
    ``layers[i]``. ``qkv_layout`` says how per-head query/key/value columns are laid out in the
    projection outputs: ``"gpt2"`` (one fused ``[q | k | v]`` Conv1D, head-major inside each),
    ``"neox"`` (one fused Linear whose output reshapes to ``[heads, 3 * d_head]``) or ``"split"``
    (separate ``q_proj``/``k_proj``/``v_proj`` Linear layers, possibly grouped-query).
    """

    arch: Arch
    layers: str
    emb: str
    """Module whose output is the embedding written into the residual stream (``EMB``)."""
    final_norm: str
    unembed: str
    attn: str
    o_proj: str
    mlp: str
    ln_attn: str
    qkv_layout: Literal["gpt2", "neox", "split"]
    qkv: tuple[str, ...]
    """Fused projection path (one entry) or ``(q_proj, k_proj, v_proj)``."""
    conv1d: bool = False
    """GPT-2's Conv1D stores weights as ``[in, out]`` (``nn.Linear`` is ``[out, in]``)."""


ADAPTERS: dict[str, Adapter] = {
    "gpt2": Adapter(arch="gpt2", layers="transformer.h", emb="transformer.drop", final_norm="transformer.ln_f",
                    unembed="lm_head", attn="attn", o_proj="attn.c_proj", mlp="mlp", ln_attn="ln_1",
                    qkv_layout="gpt2", qkv=("attn.c_attn",), conv1d=True),
    "neox": Adapter(arch="neox", layers="gpt_neox.layers", emb="gpt_neox.emb_dropout",
                    final_norm="gpt_neox.final_layer_norm", unembed="lm_head", attn="attention",
                    o_proj="attention.dense", mlp="mlp", ln_attn="input_layernorm", qkv_layout="neox",
                    qkv=("attention.query_key_value",)),
    "llama": Adapter(arch="llama", layers="model.layers", emb="model.embed_tokens", final_norm="model.norm",
                     unembed="lm_head", attn="self_attn", o_proj="self_attn.o_proj", mlp="mlp",
                     ln_attn="input_layernorm", qkv_layout="split",
                     qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
}

CPU_STACK_TOKENS = 2048
"""Tokens per stacked forward on the CPU (per-variant cost was lowest around 512-2048 and rose again at ~9k)."""

MODEL_TYPES: dict[str, str] = {"gpt2": "gpt2", "gpt_neox": "neox", "llama": "llama", "mistral": "llama",
                               "qwen2": "llama"}
"""HF ``config.model_type`` → adapter name."""


def _unsupported(model_type: str) -> ArchitectureError:
    return ArchitectureError(
        f"no adapter for architecture {model_type!r} (supported: GPT-2, GPT-NeoX/Pythia, Llama/Mistral/Qwen2 "
        f"— model_types {sorted(MODEL_TYPES)})",
        fix="add an Adapter to tools.model.ADAPTERS and map its model_type in tools.model.MODEL_TYPES",
    )


class Model:
    """A Hugging Face causal LM with its tokenizer and architecture adapter.

    Attributes: ``hf`` (the ``PreTrainedModel``, in eval mode, eager attention), ``tokenizer``,
    ``adapter``, ``arch``, ``n_layers``, ``n_heads``, ``n_kv_heads``, ``d_head``, ``d_model``,
    ``d_vocab``, ``device``, ``name``.

    >>> from tools.tiny import tiny_config
    >>> from transformers import AutoModelForCausalLM
    >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("llama")))
    >>> m.arch, m.n_heads, m.n_kv_heads
    ('llama', 4, 2)
    >>> m.check("L0H7")
    Traceback (most recent call last):
    ...
    tools.errors.ComponentError: head index 7 out of range in 'L0H7' (model has 4 heads per layer) — use heads 0..3
    """

    def __init__(self, hf: nn.Module, tokenizer=None, name: str | None = None) -> None:
        cfg = hf.config
        model_type = getattr(cfg, "model_type", type(hf).__name__)
        if model_type not in MODEL_TYPES:
            raise _unsupported(model_type)
        self.hf = hf.eval()
        self.tokenizer = tokenizer
        self.adapter = ADAPTERS[MODEL_TYPES[model_type]]
        self.arch: Arch = self.adapter.arch
        self.name = name or getattr(cfg, "name_or_path", "") or model_type
        self.n_layers: int = cfg.num_hidden_layers
        self.n_heads: int = cfg.num_attention_heads
        self.n_kv_heads: int = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.d_model: int = cfg.hidden_size
        self.d_head: int = getattr(cfg, "head_dim", None) or self.d_model // self.n_heads
        self.d_vocab: int = cfg.vocab_size
        if getattr(cfg, "_attn_implementation", "eager") != "eager":
            hf.set_attn_implementation("eager")
        self._fingerprint: str | None = None

    @classmethod
    def from_hf(cls, hf: nn.Module, tokenizer=None, name: str | None = None) -> Model:
        """Wrap an already-built HF model (switched to eval mode and eager attention)."""
        return cls(hf, tokenizer, name)

    # --- modules -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    def module(self, path: str, layer: int | None = None) -> nn.Module:
        """The module at ``path`` (block-relative when ``layer`` is given)."""
        if layer is None:
            return self.hf.get_submodule(path)
        return self.hf.get_submodule(f"{self.adapter.layers}.{layer}.{path}")

    def block(self, layer: int) -> nn.Module:
        return self.hf.get_submodule(f"{self.adapter.layers}.{layer}")

    # --- weights -------------------------------------------------------------------------------
    def W_O(self, layer: int) -> torch.Tensor:
        """Output weights per head, ``[n_heads, d_head, d_model]`` (head output = ``z_h @ W_O[h]``)."""
        w = self.module(self.adapter.o_proj, layer).weight
        w = w if self.adapter.conv1d else w.T  # -> [H*dh, d_model]
        return w.reshape(self.n_heads, self.d_head, self.d_model)

    def b_O(self, layer: int) -> torch.Tensor:
        """Attention output bias ``[d_model]`` (zeros when the model has none)."""
        b = getattr(self.module(self.adapter.o_proj, layer), "bias", None)
        return torch.zeros(self.d_model, dtype=self.dtype, device=self.device) if b is None else b

    def W_V(self, layer: int) -> torch.Tensor:
        """Value weights per head, ``[n_heads, d_model, d_head]`` (GQA: each head gets its group's)."""
        return self._qkv_weight(layer, "v")

    def W_Q(self, layer: int) -> torch.Tensor:
        """Query weights per head, ``[n_heads, d_model, d_head]`` (before rotary, if any)."""
        return self._qkv_weight(layer, "q")

    def W_K(self, layer: int) -> torch.Tensor:
        """Key weights per head, ``[n_heads, d_model, d_head]`` (GQA: each head gets its group's)."""
        return self._qkv_weight(layer, "k")

    def _qkv_weight(self, layer: int, which: str) -> torch.Tensor:
        H, dh, D = self.n_heads, self.d_head, self.d_model
        a = self.adapter
        i = "qkv".index(which)
        if a.qkv_layout == "gpt2":
            w = self.module(a.qkv[0], layer).weight  # [D, 3D]
            return w[:, i * D:(i + 1) * D].reshape(D, H, dh).permute(1, 0, 2)
        if a.qkv_layout == "neox":
            w = self.module(a.qkv[0], layer).weight  # [3D, D] rows = [H, 3*dh]
            return w.reshape(H, 3, dh, D)[:, i].transpose(1, 2)
        w = self.module(a.qkv[i], layer).weight  # [n*dh, D]
        n = H if which == "q" else self.n_kv_heads
        per = w.reshape(n, dh, D).transpose(1, 2)
        return per if n == H else per.repeat_interleave(H // n, dim=0)

    @property
    def W_U(self) -> torch.Tensor:
        """Unembedding ``[d_vocab, d_model]``."""
        return self.hf.get_output_embeddings().weight

    @property
    def W_E(self) -> torch.Tensor:
        """Token embedding ``[d_vocab, d_model]``."""
        return self.hf.get_input_embeddings().weight

    def qkv_site(self, which: str, head: int) -> tuple[str, slice]:
        """Internal site name and output-column slice holding ``head``'s query/key/value (pre-rotary).

        For grouped-query models the key/value slice is shared by the head's whole KV group.
        """
        H, dh, D = self.n_heads, self.d_head, self.d_model
        i = "qkv".index(which)
        layout = self.adapter.qkv_layout
        if layout == "gpt2":
            return "qkv", slice(i * D + head * dh, i * D + (head + 1) * dh)
        if layout == "neox":
            return "qkv", slice(head * 3 * dh + i * dh, head * 3 * dh + (i + 1) * dh)
        g = head if which == "q" else head // (H // self.n_kv_heads)
        return which, slice(g * dh, (g + 1) * dh)

    # --- components ----------------------------------------------------------------------------
    def components(self, kind: str = "all") -> list[Component]:
        """Components of this model: ``"all"``, ``"heads"``, ``"mlps"``, ``"attn"``, ``"resid_pre"``,
        ``"resid_post"``, or ``"writers"`` (EMB, every head and MLP: the residual stream's summands
        apart from attention biases).
        """
        L, H = range(self.n_layers), range(self.n_heads)
        heads = [Component.attn_head(layer, h) for layer in L for h in H]
        table = {
            "heads": heads,
            "mlps": [Component.mlp(layer) for layer in L],
            "attn": [Component.attn(layer) for layer in L],
            "resid_pre": [Component.resid_pre(layer) for layer in L],
            "resid_post": [Component.resid_post(layer) for layer in L],
        }
        if kind == "all":
            out = [Component.emb()]
            for layer in L:
                out += [Component.resid_pre(layer), Component.attn(layer)]
                out += [c for c in heads if c.layer == layer]
                out += [Component.mlp(layer), Component.resid_post(layer)]
            return out
        if kind == "writers":
            out = [Component.emb()]
            for layer in L:
                out += [c for c in heads if c.layer == layer] + [Component.mlp(layer)]
            return out
        if kind not in table:
            raise ComponentError(f"unknown component kind {kind!r}",
                                 fix="use all, writers, heads, mlps, attn, resid_pre or resid_post")
        return table[kind]

    def check(self, component: str | Component) -> Component:
        """Parse ``component`` and check that this model has it; return the :class:`Component`."""
        return Component.parse(component).check_shape(self.n_layers, self.n_heads)

    # --- running -------------------------------------------------------------------------------
    def to_tokens(self, prompts: list[str] | str) -> torch.Tensor:
        """Tokenize prompts that share a token length into ``[batch, seq]`` ids (no padding)."""
        if self.tokenizer is None:
            raise BatchError("this model has no tokenizer", fix="pass token ids, or load the model with its tokenizer")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        rows = [self.tokenizer(p)["input_ids"] for p in prompts]
        lengths = sorted({len(r) for r in rows})
        if len(lengths) > 1:
            raise BatchError(f"prompts tokenize to different lengths {lengths}",
                             fix="use prompts of equal token length (templates), or tokenize them separately")
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """Plain forward (no grad): logits ``[batch, seq, vocab]``."""
        with torch.no_grad():
            return self.hf(input_ids=ids.to(self.device), use_cache=False).logits

    def token_budget(self, seq_len: int = 32, free_bytes: int | None = None) -> int:
        """Tokens one stacked forward may hold (variants of a sweep stacked along the batch).

        On the CPU :data:`CPU_STACK_TOKENS` (the measured sweet spot: per-variant cost rises again for very
        large stacks). On an accelerator the stack is sized to half its free memory (``free_bytes``:
        ``torch.cuda.mem_get_info`` unless given) at :meth:`bytes_per_token` for prompts of ``seq_len``,
        between 256 and 2**18 tokens.

        >>> from tools.tiny import tiny_config
        >>> from transformers import AutoModelForCausalLM
        >>> m = Model.from_hf(AutoModelForCausalLM.from_config(tiny_config("gpt2")))
        >>> m.token_budget()
        2048
        >>> m.token_budget(free_bytes=2 * 1024**3, seq_len=16) == min(2**18, 2**30 // m.bytes_per_token(16))
        True
        """
        if free_bytes is None:
            if self.device.type != "cuda":
                return CPU_STACK_TOKENS
            free_bytes = int(torch.cuda.mem_get_info(self.device)[0])
        return int(max(256, min(2**18, free_bytes // 2 // self.bytes_per_token(seq_len))))

    def bytes_per_token(self, seq_len: int = 32) -> int:
        """Peak memory one token of a no-grad stacked forward needs, in bytes (an upper estimate).

        Logits (``d_vocab``, in the model's dtype plus a float32 copy for the metric's softmax), one layer's
        activations at a time (residual, q/k/v, z, 4x MLP hidden, edits' copies: ``16 * d_model``) and its
        attention weights (``n_heads * seq_len``, twice: scores and probabilities).
        """
        size = torch.finfo(self.dtype).bits // 8
        return size * (self.d_vocab + 16 * self.d_model + 2 * self.n_heads * seq_len) + 4 * self.d_vocab

    def fingerprint(self) -> str:
        """sha256 over the state dict (names, shapes, dtypes, bytes); cached after the first call."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for k, v in sorted(self.hf.state_dict().items()):
                t = v.detach().to("cpu").contiguous()
                h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
                h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def copy(self) -> Model:
        """A deep copy (independent weights)."""
        return Model(copy.deepcopy(self.hf), self.tokenizer, self.name)

    def __repr__(self) -> str:
        return (f"Model({self.name!r}, arch={self.arch}, layers={self.n_layers}, heads={self.n_heads}, "
                f"d_model={self.d_model})")


def load_model(name_or_path: str | Path, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None) -> Model:
    """Load a causal LM and its tokenizer by local path (offline) or hub name (from the local cache).

    Always eager attention (attention weights are needed); float32 unless ``dtype`` is given; device
    defaults to CUDA when available. A local directory is read with ``local_files_only=True``.

    >>> load_model("/no/such/dir")
    Traceback (most recent call last):
    ...
    tools.errors.ArchitectureError: cannot load model '/no/such/dir': ...
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = str(name_or_path)
    local = Path(src).exists()
    try:
        cfg = AutoConfig.from_pretrained(src, local_files_only=local)
    except Exception as e:  # noqa: BLE001 - any loader failure becomes one clear error
        raise ArchitectureError(f"cannot load model {src!r}: {type(e).__name__}: {str(e).splitlines()[0][:200]}",
                                fix="give a directory saved with save_pretrained, or a hub name already in the "
                                    "local cache (set HF_HUB_OFFLINE=1 when offline)") from None
    if cfg.model_type not in MODEL_TYPES:
        raise _unsupported(cfg.model_type)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available()
                                                                           else "cpu")
    hf = AutoModelForCausalLM.from_pretrained(src, local_files_only=local, attn_implementation="eager",
                                              dtype=dtype or torch.float32)
    hf.to(device)
    try:
        tok = AutoTokenizer.from_pretrained(src, local_files_only=local)
    except Exception:  # noqa: BLE001 - a model without a tokenizer still works on ids
        tok = None
    return Model(hf, tok, name=src)
