"""ltjax.models.clip_text: a tiny CLIP text tower written as open_clip and Hugging Face state dicts, against an
independent numpy forward; tokenisation (start / end tokens, truncation); CSSFE's encoder="clip"; clear errors."""
import ml_collections
import numpy as np
import pytest
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel

from test_pretrained import _write_safetensors

from ltjax.models import clip_text

WORDS = ["a", "photo", "of", "the", "dog", "cat", "person", "dining", "table", "."]
V, W, LAYERS, HEADS, CTX, E = 16, 16, 2, 2, 12, 10


def _tokenizer(path, post=True):
    vocab = {"<|startoftext|>": 13, "<|endoftext|>": 14, "[UNK]": 15, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    if post:
        tok.post_processor = processors.TemplateProcessing(
            single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 13), ("<|endoftext|>", 14)])
    tok.save(str(path))
    return str(path)


def _open_clip_sd(seed=0):
    rng = np.random.default_rng(seed)
    r = lambda *s: (0.3 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    sd = {"token_embedding.weight": r(V, W), "positional_embedding": r(CTX, W),
          "ln_final.weight": 1 + r(W), "ln_final.bias": r(W), "text_projection": r(W, E),
          "visual.conv1.weight": r(4, 3, 3, 3)}  # a full CLIP model's image tower: ignored
    for i in range(LAYERS):
        b = f"transformer.resblocks.{i}."
        sd.update({b + "ln_1.weight": 1 + r(W), b + "ln_1.bias": r(W), b + "attn.in_proj_weight": r(3 * W, W),
                   b + "attn.in_proj_bias": r(3 * W), b + "attn.out_proj.weight": r(W, W), b + "attn.out_proj.bias": r(W),
                   b + "ln_2.weight": 1 + r(W), b + "ln_2.bias": r(W), b + "mlp.c_fc.weight": r(4 * W, W),
                   b + "mlp.c_fc.bias": r(4 * W), b + "mlp.c_proj.weight": r(W, 4 * W), b + "mlp.c_proj.bias": r(W)})
    return sd


def _to_hf(sd):
    hf = {"text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
          "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
          "text_model.final_layer_norm.weight": sd["ln_final.weight"],
          "text_model.final_layer_norm.bias": sd["ln_final.bias"],
          "text_projection.weight": sd["text_projection"].T.copy()}
    for i in range(LAYERS):
        b, h = f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        for n, part in zip("qkv", np.split(sd[b + "attn.in_proj_weight"], 3)):
            hf[h + f"self_attn.{n}_proj.weight"] = part
        for n, part in zip("qkv", np.split(sd[b + "attn.in_proj_bias"], 3)):
            hf[h + f"self_attn.{n}_proj.bias"] = part
        hf.update({h + "self_attn.out_proj.weight": sd[b + "attn.out_proj.weight"],
                   h + "self_attn.out_proj.bias": sd[b + "attn.out_proj.bias"],
                   h + "layer_norm1.weight": sd[b + "ln_1.weight"], h + "layer_norm1.bias": sd[b + "ln_1.bias"],
                   h + "layer_norm2.weight": sd[b + "ln_2.weight"], h + "layer_norm2.bias": sd[b + "ln_2.bias"],
                   h + "mlp.fc1.weight": sd[b + "mlp.c_fc.weight"], h + "mlp.fc1.bias": sd[b + "mlp.c_fc.bias"],
                   h + "mlp.fc2.weight": sd[b + "mlp.c_proj.weight"], h + "mlp.fc2.bias": sd[b + "mlp.c_proj.bias"]})
    return hf


def _save(path, sd, prefix=""):
    _write_safetensors(path, {prefix + k: ("F32", v) for k, v in sd.items()})
    return str(path)


def _numpy_clip(sd, ids):
    """The CLIP text forward in float64 numpy, written from the torch modules' definitions."""
    def ln(x, w, b):
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * w + b

    g = {k: v.astype(np.float64) for k, v in sd.items()}
    n = len(ids)
    x = g["token_embedding.weight"][ids] + g["positional_embedding"][:n]
    d = W // HEADS
    for i in range(LAYERS):
        b = f"transformer.resblocks.{i}."
        h = ln(x, g[b + "ln_1.weight"], g[b + "ln_1.bias"])
        qkv = h @ g[b + "attn.in_proj_weight"].T + g[b + "attn.in_proj_bias"]
        q, k, v = np.split(qkv, 3, axis=-1)
        heads = []
        for j in range(HEADS):
            s = q[:, j * d:(j + 1) * d] @ k[:, j * d:(j + 1) * d].T / np.sqrt(d)
            s = np.where(np.tril(np.ones((n, n))) > 0, s, -np.inf)
            a = np.exp(s - s.max(-1, keepdims=True))
            heads.append((a / a.sum(-1, keepdims=True)) @ v[:, j * d:(j + 1) * d])
        x = x + np.concatenate(heads, -1) @ g[b + "attn.out_proj.weight"].T + g[b + "attn.out_proj.bias"]
        h = ln(x, g[b + "ln_2.weight"], g[b + "ln_2.bias"]) @ g[b + "mlp.c_fc.weight"].T + g[b + "mlp.c_fc.bias"]
        h = h / (1 + np.exp(-1.702 * h))
        x = x + h @ g[b + "mlp.c_proj.weight"].T + g[b + "mlp.c_proj.bias"]
    x = ln(x, g["ln_final.weight"], g["ln_final.bias"])
    return x[int(np.argmax(ids))] @ g["text_projection"]  # the end token has the largest id here


def test_open_clip_and_hf_layouts_match_numpy_forward(tmp_path):
    tok = _tokenizer(tmp_path / "tokenizer.json")
    sd = _open_clip_sd()
    texts = ["a photo of a dog.", "A photo of a dining table.", "person"]
    oc = clip_text.encode(texts, _save(tmp_path / "oc.safetensors", sd, prefix="module."), tok, heads=HEADS)
    hf = clip_text.encode(texts, _save(tmp_path / "hf.safetensors", _to_hf(sd)), tok, heads=HEADS)
    assert oc.shape == (3, E)
    ids, eot = clip_text.tokenize(clip_text.load_tokenizer(tok), texts, CTX)
    for i in range(3):
        want = _numpy_clip(sd, ids[i, : eot[i] + 1])
        np.testing.assert_allclose(oc[i], want, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(hf, oc, rtol=1e-5, atol=1e-5)
    # padding after the end token changes nothing (causal mask): a text alone equals it in a batch
    np.testing.assert_allclose(clip_text.encode(["person"], tmp_path / "oc.safetensors", tok, heads=HEADS)[0], oc[2],
                               rtol=1e-5, atol=1e-5)


def test_tokenize_adds_start_end_and_truncates(tmp_path):
    with_post = clip_text.load_tokenizer(_tokenizer(tmp_path / "a.json"))
    without = clip_text.load_tokenizer(_tokenizer(tmp_path / "b.json", post=False))
    a, ea = clip_text.tokenize(with_post, ["a photo of the cat ."], CTX)
    b, eb = clip_text.tokenize(without, ["a photo of the cat ."], CTX)
    np.testing.assert_array_equal(a, b)
    assert list(a[0, :8]) == [13, 1, 2, 3, 4, 6, 10, 14] and (a[0, 8:] == 0).all() and ea[0] == eb[0] == 7
    long, e = clip_text.tokenize(with_post, [" ".join(["dog"] * 30)], CTX)
    assert long.shape == (1, CTX) and long[0, 0] == 13 and long[0, -1] == 14 and e[0] == CTX - 1


def test_cssfe_clip_encoder_and_clear_errors(tmp_path):
    from ltjax.methods import cssfe

    tok = _tokenizer(tmp_path / "tokenizer.json")
    weights = _save(tmp_path / "oc.safetensors", _open_clip_sd(1))
    m = ml_collections.ConfigDict({"encoder": "clip", "template": "a photo of a {}.", "clip_weights": weights,
                                   "clip_tokenizer": tok, "clip_heads": HEADS, "clip_act": "quick_gelu"})
    e = cssfe.label_embeddings(m, ["dog", "dining_table"])
    want = clip_text.encode(["a photo of a dog.", "a photo of a dining table."], weights, tok, heads=HEADS)
    np.testing.assert_allclose(e, want, rtol=1e-6)
    with pytest.raises(ValueError, match="needs method.clip_weights"):
        cssfe.label_embeddings(ml_collections.ConfigDict({**m.to_dict(), "clip_weights": ""}), ["dog"])
    with pytest.raises(FileNotFoundError, match="CLIP tokenizer file"):
        clip_text.encode(["dog"], weights, str(tmp_path / "none.json"))
    with pytest.raises(FileNotFoundError, match="CLIP weights file"):
        clip_text.encode(["dog"], str(tmp_path / "none.safetensors"), tok)
    other = _save(tmp_path / "resnet.safetensors", {"conv1.weight": np.zeros((2, 3, 1, 1), np.float32)})
    with pytest.raises(ValueError, match="is not a CLIP text tower"):
        clip_text.encode(["dog"], other, tok)
    small = _open_clip_sd()
    small["token_embedding.weight"] = small["token_embedding.weight"][:5]
    with pytest.raises(ValueError, match="different models"):
        clip_text.encode(["dog"], _save(tmp_path / "small.safetensors", small), tok, heads=HEADS)
    with pytest.raises(ValueError, match="not divisible"):
        clip_text.encode(["dog"], weights, tok, heads=3)
