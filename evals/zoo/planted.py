"""Planted-circuit models: GPT-2 weights written by hand so that named heads implement named roles.

Ground truth is exact: every head has one role (``GROUND_TRUTH``), including

- **distractors**: heads with sharp, plausible attention patterns (previous-token, same-token,
  all-names...) and *large* outputs that have no effect at all, because they write only along the
  all-ones direction of the residual stream, which every LayerNorm removes (it subtracts the mean);
- a **redundant pair**: two heads doing the same job with enough margin that ablating either alone
  barely changes the logit difference, while ablating both breaks the task;
- in ``planted-twin-induction``, the known answers that validate the interchangeability score
  (:data:`KNOWN_ANSWERS`): two heads that share a role *and* an output subspace (truly
  substitutable), two pairs of heads with the same label that write different subspaces (one feeds
  another reader, one copies another half of the vocabulary), and a redundant pair.

:data:`INTERCHANGE_TRUTH` is each model's ground-truth clustering for the interchangeability score:
components are together exactly when either one's output can do the other's job. It differs from
the role labels where (b)-type heads share a label but not a function.

How the weights are built: the residual stream is split into named subspaces (token identity,
position, "previous token", "duplicate" flag, "inhibit name", output), each a block of an orthonormal
basis of the space orthogonal to the all-ones vector (drawn with a fixed seed, so weights look dense).
LayerNorm weights are 1 and biases 0, so LayerNorm only rescales vectors in that space. Each head reads
and writes those subspaces through its Q, K, V, O weights; a random orthogonal rotation inside each
head's dimensions (function-preserving) hides the one-hot structure. MLPs are zero. The unembedding is
untied and reads only the output subspace.

``python -m evals.zoo.planted`` writes the models into ``evals/zoo/models/`` (fast, deterministic).

>>> sorted(GROUND_TRUTH)
['planted-induction', 'planted-ioi', 'planted-twin-induction']
>>> GROUND_TRUTH["planted-induction"]["L1H0"]
'induction'
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

D_MODEL = 256
N_HEADS = 4
D_HEAD = D_MODEL // N_HEADS
S0 = math.sqrt(D_MODEL / 3)
"""LayerNorm's gain on a fresh embedding (token + position + constant, norm sqrt(3)): values read
through LayerNorm are scaled by sqrt(d_model) / norm, so value weights divide by the expected gain."""


def _gain(sq_norm: float) -> float:
    """LayerNorm gain at a position whose residual (in the designed subspaces) has squared norm ``sq_norm``."""
    return math.sqrt(D_MODEL / sq_norm)

GROUND_TRUTH: dict[str, dict[str, str]] = {
    "planted-induction": {
        "L0H0": "previous token", "L0H1": "previous token", "L0H2": "distractor", "L0H3": "distractor",
        "L1H0": "induction", "L1H1": "distractor", "L1H2": "distractor", "L1H3": "distractor",
    },
    "planted-ioi": {
        "L0H0": "duplicate token", "L0H1": "distractor", "L0H2": "distractor", "L0H3": "distractor",
        "L1H0": "s-inhibition", "L1H1": "s-inhibition", "L1H2": "distractor", "L1H3": "distractor",
        "L2H0": "name mover", "L2H1": "distractor", "L2H2": "distractor", "L2H3": "distractor",
    },
    "planted-twin-induction": {
        "L0H0": "previous token", "L0H1": "previous token", "L0H2": "previous token", "L0H3": "distractor",
        "L1H0": "induction", "L1H1": "induction", "L1H2": "induction", "L1H3": "induction",
    },
}
"""Model → component → role, exact by construction."""

REDUNDANT_PAIRS: dict[str, tuple[str, str]] = {
    "planted-induction": ("L0H0", "L0H1"),
    "planted-ioi": ("L1H0", "L1H1"),
    "planted-twin-induction": ("L0H0", "L0H1"),
}

INTERCHANGE_TRUTH: dict[str, dict[str, list[str]]] = {
    "planted-induction": {"previous token": ["L0H0", "L0H1"], "induction": ["L1H0"]},
    "planted-ioi": {"duplicate token": ["L0H0"], "s-inhibition": ["L1H0", "L1H1"], "name mover": ["L2H0"]},
    "planted-twin-induction": {
        "previous token → PREV": ["L0H0", "L0H1"], "previous token → PREV2": ["L0H2"],
        "induction, all tokens": ["L1H0", "L1H1"], "induction, first half": ["L1H2"],
        "induction, second half": ["L1H3"],
    },
}
"""Model → ground-truth clustering for interchangeability (distractors left out: they have no job)."""

KNOWN_ANSWERS: dict[str, dict[str, list[tuple[str, str]]]] = {
    "planted-induction": {"redundant": [("L0H0", "L0H1")]},
    "planted-ioi": {"redundant": [("L1H0", "L1H1")]},
    "planted-twin-induction": {
        "substitutable": [("L1H0", "L1H1")],
        "same label, different subspace": [("L0H0", "L0H2"), ("L0H1", "L0H2"), ("L1H2", "L1H3")],
        "redundant": [("L0H0", "L0H1")],
    },
}
"""Model → kind of pair → pairs whose interchangeability is known: ``substitutable`` and ``redundant``
pairs must score high (and be defined), ``same label, different subspace`` pairs low."""

EXPLANATIONS: dict[str, dict[str, str]] = {
    "planted-induction": {
        "previous token": "Attends from each position to the previous one and writes that token's identity "
                          "into a 'previous token' subspace (one of a redundant pair: either alone suffices).",
        "induction": "Attends from the current token to the position whose previous token matches it "
                     "(keys read the previous-token subspace: K-composition) and writes that position's "
                     "token into the output subspace the unembedding reads.",
        "distractor": "Sharp attention pattern and large output, written only along the all-ones direction "
                      "that LayerNorm removes: no effect on anything downstream.",
    },
    "planted-ioi": {
        "duplicate token": "At a name that occurred before (S2), attends to its earlier occurrence (S1) and "
                           "writes a 'duplicate' flag; other positions attend to BOS, whose value is zero.",
        "s-inhibition": "Attends from END to the flagged duplicate name (S2) and writes that name into an "
                        "'inhibit' subspace that the name mover's query reads with a negative sign "
                        "(one of a redundant pair: either alone suffices).",
        "name mover": "Attends from END to names, except the inhibited one, and copies the attended name "
                      "into the output subspace the unembedding reads.",
        "distractor": "Sharp attention pattern and large output, written only along the all-ones direction "
                      "that LayerNorm removes: no effect on anything downstream.",
    },
    "planted-twin-induction": {
        "previous token": "Attends from each position to the previous one and writes that token's identity into a "
                          "'previous token' subspace: L0H0 and L0H1 write PREV (a redundant pair: either alone "
                          "suffices), L0H2 writes a second subspace PREV2 that only L1H1 reads.",
        "induction": "Attends from the current token to the position whose previous token matches it and writes "
                     "that position's token into the output subspace: L1H0 (keys on PREV) and L1H1 (keys on PREV2) "
                     "copy every token, L1H2 only the first half of the vocabulary and L1H3 only the second.",
        "distractor": "Sharp attention pattern and large output, written only along the all-ones direction "
                      "that LayerNorm removes: no effect on anything downstream.",
    },
}


class _Space:
    """Allocates named blocks of the virtual (ones-orthogonal) residual basis."""

    def __init__(self, d_model: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(d_model, d_model, generator=g, dtype=torch.float64)
        a[:, 0] = 1.0
        q, _ = torch.linalg.qr(a)
        self.basis = q[:, 1:]  # [D, D-1], every column orthogonal to the ones vector
        self.size = d_model - 1
        self.blocks: dict[str, tuple[int, int]] = {}
        self.used = 0

    def block(self, name: str, n: int) -> int:
        if name not in self.blocks:
            if self.used + n > self.size:
                raise ValueError(f"residual space full allocating {name}")
            self.blocks[name] = (self.used, n)
            self.used += n
        return self.blocks[name][0]


class _Builder:
    """Virtual weights for a GPT-2 model, compiled into a real ``GPT2LMHeadModel``."""

    def __init__(self, vocab: int, n_layers: int, n_positions: int, seed: int) -> None:
        self.V, self.L, self.P = vocab, n_layers, n_positions
        self.sp = _Space(D_MODEL, seed)
        self.seed = seed
        K = self.sp.size
        f = torch.float64
        self.wte = torch.zeros(vocab, K, dtype=f)
        self.wpe = torch.zeros(n_positions, K, dtype=f)
        self.unembed = torch.zeros(vocab, K, dtype=f)
        self.q = torch.zeros(n_layers, N_HEADS, K, D_HEAD, dtype=f)
        self.k = torch.zeros_like(self.q)
        self.v = torch.zeros_like(self.q)
        self.o = torch.zeros(n_layers, N_HEADS, D_HEAD, K, dtype=f)
        self.o_ones = torch.zeros(n_layers, N_HEADS, D_HEAD, dtype=f)

    def idx(self, name: str, i: int = 0, n: int = 1) -> int:
        return self.sp.block(name, n) + i

    def compile(self, tokenizer):
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(vocab_size=self.V, n_positions=self.P, n_layer=self.L, n_head=N_HEADS, n_embd=D_MODEL,
                         n_inner=4, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        cfg._attn_implementation = "eager"
        model = GPT2LMHeadModel(cfg)
        B = self.sp.basis  # [D, K]
        ones = torch.ones(D_MODEL, dtype=torch.float64)
        g = torch.Generator().manual_seed(self.seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
            model.transformer.wte.weight.copy_(self.wte @ B.T)
            model.transformer.wpe.weight.copy_(self.wpe @ B.T)
            model.lm_head.weight.copy_(self.unembed @ B.T)
            model.transformer.ln_f.weight.fill_(1.0)
            for layer, blk in enumerate(model.transformer.h):
                blk.ln_1.weight.fill_(1.0)
                blk.ln_2.weight.fill_(1.0)
                w_attn = torch.zeros(D_MODEL, 3 * D_MODEL, dtype=torch.float64)
                w_proj = torch.zeros(D_MODEL, D_MODEL, dtype=torch.float64)
                for h in range(N_HEADS):
                    # Random rotations inside the head: q·k and v→o are unchanged.
                    r_qk, _ = torch.linalg.qr(torch.randn(D_HEAD, D_HEAD, generator=g, dtype=torch.float64))
                    r_vo, _ = torch.linalg.qr(torch.randn(D_HEAD, D_HEAD, generator=g, dtype=torch.float64))
                    s = slice(h * D_HEAD, (h + 1) * D_HEAD)
                    w_attn[:, s] = B @ self.q[layer, h] @ r_qk
                    w_attn[:, D_MODEL + h * D_HEAD: D_MODEL + (h + 1) * D_HEAD] = B @ self.k[layer, h] @ r_qk
                    w_attn[:, 2 * D_MODEL + h * D_HEAD: 2 * D_MODEL + (h + 1) * D_HEAD] = B @ self.v[layer, h] @ r_vo
                    w_proj[s, :] = r_vo.T @ (self.o[layer, h] @ B.T + self.o_ones[layer, h][:, None] * ones[None, :])
                blk.attn.c_attn.weight.copy_(w_attn)
                blk.attn.c_proj.weight.copy_(w_proj)
        return model.eval()


def _distractor(b: _Builder, layer: int, head: int, pattern: str, token_ids: list[int], rng: torch.Generator,
                scale: float = 40.0) -> None:
    """A head with a sharp ``pattern`` whose output lies on the all-ones direction (invisible to LayerNorm)."""
    tok, pos = b.idx("TOK", 0, b.V), b.idx("POS", 0, b.P)
    const = b.idx("CONST")
    w = 3.0
    if pattern == "previous":
        for i in range(b.P):
            b.q[layer, head, pos + i, i % D_HEAD] += w
            if i + 1 < b.P:
                b.k[layer, head, pos + i, (i + 1) % D_HEAD] += w
    elif pattern == "same-token":
        for j, t in enumerate(token_ids[: D_HEAD]):
            b.q[layer, head, tok + t, j] += w
            b.k[layer, head, tok + t, j] += w
    elif pattern == "tokens":  # attends to any of token_ids
        b.q[layer, head, const, 0] += w
        for t in token_ids:
            b.k[layer, head, tok + t, 0] += w
    elif pattern == "bos":
        b.q[layer, head, const, 0] += w
        b.k[layer, head, tok + 1, 0] += w  # <bos> has id 1 in the project's word tokenizers
    else:  # pragma: no cover
        raise ValueError(pattern)
    values = (torch.rand(b.V, generator=rng, dtype=torch.float64) * 2 - 1) * scale / S0
    for t in range(b.V):
        b.v[layer, head, tok + t, 0] = values[t]
    b.o_ones[layer, head, 0] = 1.0


def _embed(b: _Builder) -> None:
    tok, pos, const = b.idx("TOK", 0, b.V), b.idx("POS", 0, b.P), b.idx("CONST")
    for t in range(b.V):
        b.wte[t, tok + t] = 1.0
        b.wte[t, const] = 1.0
    for i in range(b.P):
        b.wpe[i, pos + i] = 1.0


def build_planted_induction(seed: int = 0):
    """``(model, tokenizer)``: previous-token pair L0H0/L0H1 → induction head L1H0; six distractors."""
    from evals.tasks import load_task
    from tools.tiny import word_tokenizer

    spec = load_task("planted-induction")
    tok = word_tokenizer(spec.vocabulary())
    content = [tok.convert_tokens_to_ids(w) for w in spec.generator.tokens]
    b = _Builder(vocab=len(tok), n_layers=2, n_positions=48, seed=seed)
    _embed(b)
    TOK, POS, CONST = b.idx("TOK", 0, b.V), b.idx("POS", 0, b.P), b.idx("CONST")
    PREV = b.idx("PREV", 0, b.V)
    OUT = b.idx("OUT", 0, b.V)
    rng = torch.Generator().manual_seed(seed + 7)
    # L0H0, L0H1: previous-token heads (redundant pair).
    for h in (0, 1):
        for i in range(b.P):
            b.q[0, h, POS + i, i] = 2.0
            if i + 1 < b.P:
                b.k[0, h, POS + i, i + 1] = 2.0
        for j, t in enumerate(content + [tok.bos_token_id]):
            b.v[0, h, TOK + t, j] = 1.0 / S0
            b.o[0, h, j, PREV + t] = 0.5
    # L1H0: induction head. Query: current token; key: previous-token subspace; BOS is a weak sink.
    sink = len(content)
    for j, t in enumerate(content):
        b.q[1, 0, TOK + t, j] = 3.0
        b.k[1, 0, PREV + t, j] = 3.0
        b.v[1, 0, TOK + t, j] = 1.0 / _gain(3 + 1)  # key position: embedding + PREV of norm 1
        b.o[1, 0, j, OUT + t] = 6.0
        b.unembed[t, OUT + t] = 1.0
    b.q[1, 0, CONST, sink] = 3.0
    b.k[1, 0, TOK + tok.bos_token_id, sink] = 0.5
    # Distractors: look like previous-token, same-token and BOS heads; write only along all-ones.
    _distractor(b, 0, 2, "same-token", content, rng)
    _distractor(b, 0, 3, "previous", content, rng)
    _distractor(b, 1, 1, "previous", content, rng)
    _distractor(b, 1, 2, "same-token", content, rng)
    _distractor(b, 1, 3, "bos", content, rng)
    return b.compile(tok), tok


def build_planted_ioi(seed: int = 0):
    """``(model, tokenizer)``: duplicate-token L0H0 → S-inhibition pair L1H0/L1H1 → name mover L2H0."""
    from evals.tasks import load_task
    from tools.tiny import word_tokenizer

    spec = load_task("planted-ioi")
    tok = word_tokenizer(spec.vocabulary())
    names = [tok.convert_tokens_to_ids(n) for n in spec.generator.names]
    bos = tok.bos_token_id
    b = _Builder(vocab=len(tok), n_layers=3, n_positions=32, seed=seed)
    _embed(b)
    TOK, POS, CONST = b.idx("TOK", 0, b.V), b.idx("POS", 0, b.P), b.idx("CONST")
    DUP = b.idx("DUP")
    INH = b.idx("INH", 0, len(names))
    OUT = b.idx("OUT", 0, len(names))
    rng = torch.Generator().manual_seed(seed + 11)
    # L0H0 duplicate-token head: same name, not itself; otherwise the BOS sink (value 0).
    w = 2.0
    n_names = len(names)
    for j, t in enumerate(names):
        b.q[0, 0, TOK + t, j] = w
        b.k[0, 0, TOK + t, j] = w
        b.v[0, 0, TOK + t, 0] = 1.0 / S0
    for i in range(b.P):
        b.q[0, 0, POS + i, n_names + i] = -w
        b.k[0, 0, POS + i, n_names + i] = w
    sink = n_names + b.P
    b.q[0, 0, CONST, sink] = w
    b.k[0, 0, TOK + bos, sink] = w / 2
    b.o[0, 0, 0, DUP] = 1.0
    # L1H0, L1H1 S-inhibition heads (redundant pair): attend to the flagged name, write "inhibit that name".
    for h in (1, 0):
        b.q[1, h, CONST, 0] = 3.0
        b.k[1, h, DUP, 0] = 3.0
        b.k[1, h, TOK + bos, 0] = 1.0
        for j, t in enumerate(names):
            b.v[1, h, TOK + t, j] = 1.0 / _gain(3 + 1)  # S2: embedding + DUP flag of 1
            b.o[1, h, j, INH + j] = 1.0
    # L2H0 name mover: attends to names minus the inhibited one; copies the name to the output subspace.
    for j, t in enumerate(names):
        b.k[2, 0, TOK + t, 0] = 2.0           # any name ...
        b.k[2, 0, TOK + t, 1 + j] = 2.0       # ... and its identity
        b.q[2, 0, INH + j, 1 + j] = -4.0      # minus the inhibited identity
        b.v[2, 0, TOK + t, j] = 1.0 / S0  # IO: a plain embedding
        b.o[2, 0, j, OUT + j] = 6.0
        b.unembed[t, OUT + j] = 1.0
    b.q[2, 0, CONST, 0] = 2.0
    b.k[2, 0, TOK + bos, 0] = 1.0
    b.k[2, 0, DUP, 0] = 2.0  # the repeated name draws the mover unless inhibited (why S-inhibition matters)
    # Distractors, including a decoy that attends to every name like a name mover.
    _distractor(b, 0, 1, "previous", names, rng)
    _distractor(b, 0, 2, "same-token", names, rng)
    _distractor(b, 0, 3, "bos", names, rng)
    _distractor(b, 1, 2, "tokens", names, rng)
    _distractor(b, 1, 3, "previous", names, rng)
    _distractor(b, 2, 1, "tokens", names, rng)
    _distractor(b, 2, 2, "same-token", names, rng)
    _distractor(b, 2, 3, "previous", names, rng)
    return b.compile(tok), tok


TWIN_TOKENS = [f"t{i:02d}" for i in range(40)]
"""planted-twin-induction's token pool (40 tokens, so that five token-sized subspaces fit in d_model)."""


def build_planted_twin_induction(seed: int = 0, ballast: float = 10.0, out_fraction: float = 0.4):
    """``(model, tokenizer)``: PREV pair L0H0/L0H1 and PREV2 head L0H2 → four induction heads; known answers.

    - L0H0, L0H1 write the previous token into PREV (0.5 each: a redundant pair); L0H2 writes it into
      PREV2 (same label "previous token", different subspace, different reader);
    - L1H0 (keys on PREV) and L1H1 (keys on PREV2) copy every token into OUT with equal weight: the
      same role and output subspace (substitutable), both needed;
    - L1H2 and L1H3 (keys on PREV) copy the first and the second half of the vocabulary: the same
      label, disjoint output subspaces; each matters on the prompts whose answer is in its half;
    - L0H3 is a distractor.

    Every position carries a large constant ``ballast`` vector that nothing reads, so LayerNorm's gain
    hardly depends on the heads' outputs and their effects on the logits add up (OUT is
    ``out_fraction`` of the final residual's norm; tests/test_planted.py checks the two full copiers
    are additive, not redundant).
    """
    from tools.tiny import word_tokenizer

    tok = word_tokenizer(TWIN_TOKENS)
    content = [tok.convert_tokens_to_ids(w) for w in TWIN_TOKENS]
    half = len(content) // 2
    b = _Builder(vocab=len(tok), n_layers=2, n_positions=32, seed=seed)
    TOK, POS, CONST = b.idx("TOK", 0, b.V), b.idx("POS", 0, b.P), b.idx("CONST")
    BAL = b.idx("BALLAST")
    _embed(b)
    b.wte[:, BAL] = ballast
    PREV, PREV2, OUT = b.idx("PREV", 0, b.V), b.idx("PREV2", 0, b.V), b.idx("OUT", 0, b.V)
    g0 = _gain(3 + ballast ** 2)  # token + position + constant + ballast
    g1 = _gain(5 + ballast ** 2)  # ... + PREV (1) + PREV2 (1) after layer 0
    share = out_fraction * math.sqrt(5 + ballast ** 2) / (3 * math.sqrt(1 - out_fraction ** 2))
    rng = torch.Generator().manual_seed(seed + 13)
    for h, (dst, w) in {0: (PREV, 0.5), 1: (PREV, 0.5), 2: (PREV2, 1.0)}.items():
        for i in range(b.P):
            b.q[0, h, POS + i, i] = 2.0 * S0 / g0
            if i + 1 < b.P:
                b.k[0, h, POS + i, i + 1] = 2.0 * S0 / g0
        for j, t in enumerate(content + [tok.bos_token_id]):
            b.v[0, h, TOK + t, j] = 1.0 / g0
            b.o[0, h, j, dst + t] = w
    sink = len(content)
    copiers = {0: (PREV, content, 3.0), 1: (PREV2, content, 3.5), 2: (PREV, content[:half], 3.0),
               3: (PREV, content[half:], 3.0)}
    for h, (key, copies, w) in copiers.items():
        kw = w * 8.0 / g1  # planted-induction's query/key product at its layer-1 gain of 8
        for j, t in enumerate(content):
            b.q[1, h, TOK + t, j] = kw
            b.k[1, h, key + t, j] = kw
        for j, t in enumerate(copies):
            b.v[1, h, TOK + t, j] = 1.0 / g1
            b.o[1, h, j, OUT + t] = share
        b.q[1, h, CONST, sink] = kw
        b.k[1, h, TOK + tok.bos_token_id, sink] = kw / 6
    for t in content:
        b.unembed[t, OUT + t] = 1.0
    _distractor(b, 0, 3, "same-token", content, rng)
    return b.compile(tok), tok


BUILDERS = {"planted-induction": build_planted_induction, "planted-ioi": build_planted_ioi,
            "planted-twin-induction": build_planted_twin_induction}


def evaluate_planted(model, tok, task: str, n: int = 512, seed: int = 1_000_003) -> dict[str, float]:
    """Accuracy (arg-max = answer) and mean logit difference on a held-out batch of ``task``."""
    from evals.tasks import load_task

    batch = load_task(task).make_batch(tok, n, seed=seed)
    with torch.no_grad():
        logits = model(batch.clean_ids).logits
    end = logits[torch.arange(batch.size), batch.end]
    idx = torch.arange(batch.size)
    return {"accuracy": float((end.argmax(-1) == batch.answer_ids).float().mean()),
            "metric_value": float((end[idx, batch.answer_ids] - end[idx, batch.wrong_ids]).mean()),
            "eval_prompts": n}


def write_planted(name: str, out_root: Path | None = None) -> Path:
    """Build planted model ``name``, save it (safetensors + tokenizer + ``zoo.json``) and return its dir."""
    from evals.zoo import MODELS_DIR

    model, tok = BUILDERS[name]()
    ev = evaluate_planted(model, tok, name)
    out = (out_root or MODELS_DIR) / name
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    cfg = model.config
    entry = {
        "name": name, "kind": "planted", "task": name,
        "description": BUILDERS[name].__doc__.split("\n")[0].split("``: ")[-1],
        "architecture": "gpt2", "n_layers": cfg.n_layer, "n_heads": cfg.n_head, "d_model": cfg.n_embd,
        "params": sum(p.numel() for p in model.parameters()), **ev, "train_time_s": None, "train_steps": None,
        "seed": 0, "reference_source": "planted (exact)",
        "extra": {"ground_truth": GROUND_TRUTH[name], "redundant_pair": list(REDUNDANT_PAIRS[name]),
                  "interchange_truth": INTERCHANGE_TRUTH[name]},
    }
    (out / "zoo.json").write_text(json.dumps(entry, indent=2) + "\n")
    return out


def main() -> None:
    for name in BUILDERS:
        out = write_planted(name)
        entry = json.loads((out / "zoo.json").read_text())
        print(f"{name}: accuracy {entry['accuracy']:.4f} logit diff {entry['metric_value']:.2f} -> {out}")


if __name__ == "__main__":
    main()
