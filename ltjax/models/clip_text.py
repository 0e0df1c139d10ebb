"""CLIP's text tower, loaded from a user's weights file without torch: label embeddings as CSSFE's authors made them.

The CSSFE code embeds "a photo of a {class}." with the text tower of OpenAI's CLIP RN50 (1024-d output);
LDRNet uses a CLIP text encoder's token features.  No CLIP weights ship with ltjax or can be fetched here,
so this module reads the user's copy:

* weights: a ``.safetensors`` file or a torch ``.pt`` / ``.pth`` / ``.bin`` state dict, read by
  :func:`ltjax.models.pretrained.read_state_dict` (no torch), in either layout

  - open_clip's (``token_embedding.weight``, ``positional_embedding``, ``transformer.resblocks.N.*`` with a
    fused ``attn.in_proj_weight``, ``ln_final.*``, ``text_projection`` [width, embed]), e.g.
    ``open_clip_model.safetensors`` of the hub's ``timm/resnet50_clip.openai`` (CLIP RN50, the paper's);
    visual-tower keys are ignored;
  - Hugging Face transformers' (``text_model.embeddings.*``, ``text_model.encoder.layers.N.self_attn.{q,k,v,
    out}_proj.*``, ``text_model.final_layer_norm.*``, ``text_projection.weight`` [embed, width]), e.g.
    ``model.safetensors`` of ``openai/clip-vit-base-patch32``.

  OpenAI's own ``RN50.pt`` is a TorchScript archive (pickled modules, not a state dict): convert it once
  with open_clip, or take the hub's safetensors copy above.
* tokenizer: a Hugging Face ``tokenizer.json`` (the CLIP byte-level BPE; every CLIP repository on the hub
  has one), read by the maintained ``tokenizers`` package.  ``<|startoftext|>`` / ``<|endoftext|>`` are
  added when the tokenizer's post-processor does not add them; sequences are cut to the context length
  (77) keeping the end token, and padded with id 0.

The network (width W, L layers, W / 64 heads unless given, context 77): token embedding + positional
embedding; per layer x += attn(LN1(x)) with a causal mask, x += MLP(LN2(x)) with W -> 4W -> W and
QuickGELU (x * sigmoid(1.702 x), OpenAI's; ``act="gelu"`` for retrained towers); LN_final; the feature at
the first end-of-text token; times ``text_projection`` -> [embed].  LayerNorm epsilon 1e-5 (torch's).
:func:`encode` returns these projected features (not normalised) and, on request, the per-token hidden
states after LN_final.
"""
from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

CONTEXT = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
ACTS = ("quick_gelu", "gelu")


def quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


class ResidualBlock(nn.Module):
    width: int
    heads: int
    act: str = "quick_gelu"

    @nn.compact
    def __call__(self, x, mask):
        b, n, w = x.shape
        d = w // self.heads
        h = nn.LayerNorm(epsilon=1e-5, name="ln_1")(x)
        qkv = nn.Dense(3 * w, name="in_proj")(h).reshape(b, n, 3, self.heads, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
        logits = jnp.where(mask, logits, -jnp.inf)
        att = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v).reshape(b, n, w)
        x = x + nn.Dense(w, name="out_proj")(att)
        h = nn.LayerNorm(epsilon=1e-5, name="ln_2")(x)
        h = nn.Dense(4 * w, name="c_fc")(h)
        h = quick_gelu(h) if self.act == "quick_gelu" else jax.nn.gelu(h, approximate=False)
        return x + nn.Dense(w, name="c_proj")(h)


class CLIPTextTransformer(nn.Module):
    """ids int32 [B, n] (n <= context) and the end-token positions [B] -> (projected [B, E], hidden [B, n, W])."""

    vocab_size: int
    width: int
    layers: int
    heads: int
    embed_dim: int
    context: int = CONTEXT
    act: str = "quick_gelu"

    @nn.compact
    def __call__(self, ids, eot_pos):
        n = ids.shape[1]
        x = nn.Embed(self.vocab_size, self.width, name="token_embedding")(ids)
        pos = self.param("positional_embedding", nn.initializers.normal(0.01), (self.context, self.width))
        x = x + pos[:n]
        mask = jnp.tril(jnp.ones((n, n), bool))[None, None]
        for i in range(self.layers):
            x = ResidualBlock(self.width, self.heads, self.act, name=f"resblocks_{i}")(x, mask)
        x = nn.LayerNorm(epsilon=1e-5, name="ln_final")(x)
        proj = self.param("text_projection", nn.initializers.normal(self.width ** -0.5), (self.width, self.embed_dim))
        pooled = x[jnp.arange(x.shape[0]), eot_pos]
        return pooled @ proj, x


# ---------------------------------------------------------------------------------------------------
# weights


def _t(a):
    return np.ascontiguousarray(np.asarray(a, np.float32).T)


def _open_clip_params(sd: Mapping[str, np.ndarray], prefix: str) -> tuple[dict, int]:
    g = lambda k: np.asarray(sd[prefix + k], np.float32)  # noqa: E731
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.", k)))
    p = {"token_embedding": {"embedding": g("token_embedding.weight")},
         "positional_embedding": g("positional_embedding"),
         "ln_final": {"scale": g("ln_final.weight"), "bias": g("ln_final.bias")},
         "text_projection": g("text_projection")}
    for i in range(layers):
        b = f"transformer.resblocks.{i}."
        p[f"resblocks_{i}"] = {
            "ln_1": {"scale": g(b + "ln_1.weight"), "bias": g(b + "ln_1.bias")},
            "in_proj": {"kernel": _t(g(b + "attn.in_proj_weight")), "bias": g(b + "attn.in_proj_bias")},
            "out_proj": {"kernel": _t(g(b + "attn.out_proj.weight")), "bias": g(b + "attn.out_proj.bias")},
            "ln_2": {"scale": g(b + "ln_2.weight"), "bias": g(b + "ln_2.bias")},
            "c_fc": {"kernel": _t(g(b + "mlp.c_fc.weight")), "bias": g(b + "mlp.c_fc.bias")},
            "c_proj": {"kernel": _t(g(b + "mlp.c_proj.weight")), "bias": g(b + "mlp.c_proj.bias")},
        }
    return p, layers


def _hf_params(sd: Mapping[str, np.ndarray], prefix: str) -> tuple[dict, int]:
    g = lambda k: np.asarray(sd[prefix + k], np.float32)  # noqa: E731
    pat = re.escape(prefix) + r"text_model\.encoder\.layers\.(\d+)\."
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(pat, k)))
    p = {"token_embedding": {"embedding": g("text_model.embeddings.token_embedding.weight")},
         "positional_embedding": g("text_model.embeddings.position_embedding.weight"),
         "ln_final": {"scale": g("text_model.final_layer_norm.weight"), "bias": g("text_model.final_layer_norm.bias")},
         "text_projection": _t(g("text_projection.weight"))}
    for i in range(layers):
        b = f"text_model.encoder.layers.{i}."
        qkv_w = np.concatenate([g(b + f"self_attn.{n}_proj.weight") for n in "qkv"], axis=0)
        qkv_b = np.concatenate([g(b + f"self_attn.{n}_proj.bias") for n in "qkv"], axis=0)
        p[f"resblocks_{i}"] = {
            "ln_1": {"scale": g(b + "layer_norm1.weight"), "bias": g(b + "layer_norm1.bias")},
            "in_proj": {"kernel": _t(qkv_w), "bias": qkv_b},
            "out_proj": {"kernel": _t(g(b + "self_attn.out_proj.weight")), "bias": g(b + "self_attn.out_proj.bias")},
            "ln_2": {"scale": g(b + "layer_norm2.weight"), "bias": g(b + "layer_norm2.bias")},
            "c_fc": {"kernel": _t(g(b + "mlp.fc1.weight")), "bias": g(b + "mlp.fc1.bias")},
            "c_proj": {"kernel": _t(g(b + "mlp.fc2.weight")), "bias": g(b + "mlp.fc2.bias")},
        }
    return p, layers


def params_from_state_dict(sd: Mapping[str, np.ndarray], path: str = "the state dict") -> dict:
    """Flax params of :class:`CLIPTextTransformer` from an open_clip or Hugging Face CLIP state dict."""
    for layout, key, convert in (("hf", "text_model.embeddings.token_embedding.weight", _hf_params),
                                 ("open_clip", "token_embedding.weight", _open_clip_params)):  # hf first: its key ends like open_clip's
        hits = [k for k in sd if k.endswith(key) and (k == key or k[: -len(key)].endswith("."))]
        if hits:
            prefix = hits[0][: -len(key)]
            try:
                params, _ = convert(sd, prefix)
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path}: a {layout} CLIP checkpoint without the text-tower tensor {e}; give the "
                                 "full CLIP model's weights (module docstring of ltjax/models/clip_text.py)") from None
            return params
    some = ", ".join(sorted(sd)[:6])
    raise ValueError(f"{path} is not a CLIP text tower: no 'token_embedding.weight' (open_clip) or "
                     f"'text_model.embeddings.token_embedding.weight' (Hugging Face) among its {len(sd)} tensors "
                     f"(first keys: {some}); see ltjax/models/clip_text.py for the layouts read")


def dims(params: Mapping) -> dict:
    vocab, width = params["token_embedding"]["embedding"].shape
    return {"vocab_size": int(vocab), "width": int(width), "context": int(params["positional_embedding"].shape[0]),
            "embed_dim": int(params["text_projection"].shape[1]),
            "layers": sum(1 for k in params if k.startswith("resblocks_"))}


# ---------------------------------------------------------------------------------------------------
# tokenizer


def load_tokenizer(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CLIP tokenizer file {path!r} does not exist; give the tokenizer.json of the CLIP "
                                "model (method.clip_tokenizer), e.g. from the hub's openai/clip-vit-base-patch32")
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001 - the Rust library's errors carry no common type
        raise ValueError(f"{path!r} is not a Hugging Face tokenizer.json ({e})") from None


def tokenize(tokenizer, texts: Sequence[str], context: int = CONTEXT) -> tuple[np.ndarray, np.ndarray]:
    """int32 ids [N, context] (padded with 0) and the end-token position of each text."""
    bos, eos = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
    if bos is None or eos is None:
        raise ValueError(f"the tokenizer has no {BOS} / {EOS} tokens: not a CLIP tokenizer.json")
    ids = np.zeros((len(texts), context), np.int32)
    eot = np.zeros(len(texts), np.int32)
    for i, t in enumerate(texts):
        toks = list(tokenizer.encode(t).ids)
        if not toks or toks[0] != bos:
            toks = [bos, *toks]
        if toks[-1] != eos:
            toks.append(eos)
        if len(toks) > context:
            toks = toks[: context - 1] + [eos]
        ids[i, : len(toks)] = toks
        eot[i] = len(toks) - 1
    return ids, eot


# ---------------------------------------------------------------------------------------------------
# the entry point


@functools.lru_cache(maxsize=4)
def _load(weights: str, mtime: float):
    from ltjax.models.pretrained import read_state_dict

    if not os.path.isfile(weights):
        raise FileNotFoundError(f"CLIP weights file {weights!r} does not exist (method.clip_weights)")
    return params_from_state_dict(read_state_dict(weights), weights)


def encode(texts: Sequence[str], weights: str, tokenizer: str, *, heads: int = 0, act: str = "quick_gelu",
           return_hidden: bool = False):
    """CLIP text features float32 [N, E] of ``texts`` (and, with ``return_hidden``, the hidden states
    [N, context, W] after LN_final and the end-token positions)."""
    if act not in ACTS:
        raise ValueError(f"CLIP activation must be one of {', '.join(ACTS)}, got {act!r}")
    params = _load(os.path.abspath(weights), os.path.getmtime(weights) if os.path.exists(weights) else 0.0)
    d = dims(params)
    heads = int(heads) or d["width"] // 64 or 1
    if d["width"] % heads:
        raise ValueError(f"CLIP width {d['width']} is not divisible by {heads} heads; set the head count")
    ids, eot = tokenize(load_tokenizer(tokenizer), texts, d["context"])
    if int(ids.max()) >= d["vocab_size"]:
        raise ValueError(f"the tokenizer gives id {int(ids.max())} but the weights have {d['vocab_size']} tokens: "
                         "tokenizer.json and the weights belong to different models")
    model = CLIPTextTransformer(d["vocab_size"], d["width"], d["layers"], heads, d["embed_dim"], d["context"], act)
    out, hidden = jax.jit(lambda p, i, e: model.apply({"params": p}, i, e))(params, jnp.asarray(ids), jnp.asarray(eot))
    out = np.asarray(out, np.float32)
    return (out, np.asarray(hidden, np.float32), eot) if return_hidden else out


__all__ = ["CLIPTextTransformer", "dims", "encode", "load_tokenizer", "params_from_state_dict", "quick_gelu", "tokenize"]
