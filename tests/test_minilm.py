"""all-MiniLM-L6-v2 without torch: the WordPiece tokenizer on hand-worked examples (real vocabulary and a toy
one), the real encoder (fetched through ltjax.assets, cached) against sentence-transformers' published
similarity matrix, its invariants (unit norm, determinism, padding and the attention mask), the weight
mapping, ``data.tokenizer="minilm"``, and a short training run of the frozen 'minilm' backbone."""
import json
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax.config import load_config
from ltjax.data.text import text_defaults, text_transforms
from ltjax.data.wordpiece import WordPieceTokenizer, WordPieceTransform
from ltjax.models import build_model, model_defaults, trainable_mask
from ltjax.models import minilm

from helpers import REPO


@pytest.fixture(scope="module")
def tok():
    return WordPieceTokenizer.minilm()


@pytest.fixture(scope="module")
def params():
    return minilm.pretrained_params()


# ---- tokenizer ------------------------------------------------------------------------------------


def test_wordpiece_greedy_longest_match_on_a_toy_vocabulary():
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "a", "##b"])}
    t = WordPieceTokenizer(vocab)
    assert t.tokenize("unaffable") == ["un", "##aff", "##able"]
    assert t.tokenize("UNAFFABLE unaffablex") == ["un", "##aff", "##able", "[UNK]"]  # one bad piece: whole word
    assert t.tokenize("ab, a!") == ["a", "##b", "[UNK]", "a", "[UNK]"]  # ',' and '!' are words, not in vocab
    t2 = WordPieceTokenizer({**vocab, "unaff": 9})
    assert t2.tokenize("unaffable") == ["unaff", "##able"]  # the longest prefix wins
    assert t.encode("un") == [2, 4, 3]
    assert WordPieceTokenizer(vocab, max_input_chars_per_word=3).tokenize("unaffable ab") == ["[UNK]", "a", "##b"]


def test_wordpiece_on_the_real_vocabulary(tok):
    assert len(tok) == 30522 and (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id) == (0, 100, 101, 102)
    # greedy longest match with the real uncased vocabulary: 'una' is an entry, so not 'un ##aff ##able'
    assert tok.tokenize("unaffable") == ["una", "##ffa", "##ble"]
    assert tok.tokenize("embeddings") == ["em", "##bed", "##ding", "##s"]
    # the examples of the Hugging Face tokenizer documentation
    assert tok.tokenize("I have a new GPU!") == ["i", "have", "a", "new", "gp", "##u", "!"]
    assert tok.tokenize("Hello, y'all! How are you 😁 ?") == [
        "hello", ",", "y", "'", "all", "!", "how", "are", "you", "[UNK]", "?"
    ]
    # accents stripped (NFD, marks dropped) after lower-casing the letters
    assert tok.tokenize("Héllo WÖRLD naïve Café") == ["hello", "world", "naive", "cafe"]
    # every punctuation character is a word, ASCII symbols included; digits stay words
    assert tok.tokenize("price $5+3=8 ^_^") == ["price", "$", "5", "+", "3", "=", "8", "^", "_", "^"]
    assert tok.tokenize("don't-stop.") == ["don", "'", "t", "-", "stop", "."]
    # CJK ideographs become single-character words ('爱' is not in the vocabulary)
    assert tok.tokenize("我爱北京tokyo") == ["我", "[UNK]", "北", "京", "tokyo"]
    # control characters are dropped, other whitespace separates
    assert tok.tokenize("hello\x0cworld\u2028new\tline\r\n") == ["hello", "##world", "new", "line"]
    assert tok.tokenize("x" * 101) == ["[UNK]"] and tok.tokenize("x" * 100) != ["[UNK]"]
    assert tok.tokenize("☃") == ["[UNK]"]
    # special tokens are matched in the raw text (case-sensitive), before normalisation
    assert tok.tokenize("a[SEP]b [sep]") == ["a", "[SEP]", "b", "[", "sep", "]"]
    assert tok.tokenize("") == [] and tok.encode("") == [101, 102]
    assert tok.tokenize("Hello".encode()) == ["hello"]


def _awkward_corpus(seed=0, n=400):
    """The repository's own prose (README and docs, line by line) and seeded strings of awkward characters:
    accents, CJK, emoji, control and unusual whitespace, punctuation, the special tokens, long words."""
    lines = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        lines += [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    pool = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"-()[]{}$+=^_~|<>/\\@#%&*")
    pool += list("éÉàÖüñçøßæœİıĲǅ̈́") + list("我爱北京東京한국語") + ["😁", "☃", "\u2028", "\x0c", "\t", "\n", "\x00", "\ufffd",
                                                         "\u00a0", "\u3000", "\u200b", "\u0301"]
    pool += ["[SEP]", "[CLS]", "[MASK]", "[sep]", "x" * 101, "un", "##", "aff", "able"]
    rng = np.random.default_rng(seed)
    lines += ["".join(rng.choice(pool, size=rng.integers(1, 60))) for _ in range(n)]
    return lines


def test_the_rust_tokenizer_gives_the_pure_python_references_ids(tok):
    from wordpiece_reference import WordPieceTokenizer as Reference

    from ltjax.assets import fetch
    from ltjax.data.wordpiece import TOKENIZER_ASSET

    ref = Reference.from_json(fetch(TOKENIZER_ASSET))
    corpus = _awkward_corpus()
    assert len(corpus) > 1000
    for text in corpus:
        assert tok.encode(text, None) == ref.encode(text, None), text
    ids, mask = tok.encode_batch(corpus, max_length=64)
    ref_ids, ref_mask = ref.encode_batch(corpus, max_length=64)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(mask, ref_mask)


def test_encode_truncates_and_pads(tok):
    ids = tok.encode("The weather is lovely today.")
    assert ids == [101, 1996, 4633, 2003, 8403, 2651, 1012, 102]
    assert tok.encode("The weather is lovely today.", max_length=5) == [101, 1996, 4633, 2003, 102]
    ids, mask = tok.encode_batch(["a b c", "a"], pad_to=7)
    assert ids.dtype == np.int32 and ids.shape == (2, 7)
    np.testing.assert_array_equal(mask.sum(1), [5, 3])
    np.testing.assert_array_equal(ids[1], [101, 1037, 102, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="shorter than the longest"):
        tok.encode_batch(["a b c"], pad_to=3)
    t = WordPieceTransform(tok, max_length=6)
    out = t({"inputs": b"Lovely weather, lovely!", "labels": np.ones(2)})
    np.testing.assert_array_equal(out["inputs"], [101, 8403, 4633, 1010, 8403, 102])  # cut to 4 pieces
    assert out["inputs"].dtype == np.int32
    t2 = pickle.loads(pickle.dumps(t))  # grain workers
    np.testing.assert_array_equal(t2.encode("lovely"), [101, 8403, 102, 0, 0, 0])


def test_text_pipeline_option(tok):
    cfg = text_defaults()
    cfg.tokenizer = "minilm"
    cfg.max_length = 6
    setup = text_transforms(["The weather is lovely today.", "Sunny!", ""], cfg)
    assert setup.vocab_size == 30522 and setup.input_shape == (6,) and setup.vocabulary is None
    np.testing.assert_array_equal(setup.eval_transform.encode("sunny day"), [101, 11559, 2154, 102, 0, 0])
    info = setup.info["text"]
    assert info["tokenizer"] == "minilm" and info["train_tokens"] == 6 + 2 and info["train_empty_documents"] == 1
    assert info["train_truncated_fraction"] == pytest.approx(1 / 3)  # 6 pieces > max_length - 2
    json.dumps(setup.info)
    cfg.max_length = 600
    with pytest.raises(ValueError, match="max_length must be an integer in \\[2, 512\\]"):
        text_transforms(["a"], cfg)


# ---- encoder ----------------------------------------------------------------------------------------


def test_reproduces_sentence_transformers_published_similarities(params):
    # sentence-transformers' README quick-start: model.similarity(e, e) for all-MiniLM-L6-v2
    e = minilm.encode_sentences(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."], params=params
    )
    expected = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
    np.testing.assert_allclose(e @ e.T, expected, atol=2e-4)


def test_paraphrase_ranks_above_unrelated_sentence(params):
    e = minilm.encode_sentences(
        ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."], params=params
    )
    assert e.shape == (3, 384) and e.dtype == np.float32
    paraphrase, unrelated = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert paraphrase > 0.6 and unrelated < 0.2 and paraphrase > unrelated + 0.4, (paraphrase, unrelated)


def test_unit_norm_determinism_padding_and_mask(tok, params):
    sentences = ["Long-tailed multi-label classification.", "A cat sat on the mat.", "x", "Tail classes."]
    a = minilm.encode_sentences(sentences, params=params)  # one [4, 16] batch (the shape the tests share)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(a, minilm.encode_sentences(sentences, params=params))  # deterministic
    np.testing.assert_allclose(minilm.encode_sentences(sentences[2:3], params=params)[0], a[2], atol=2e-6)

    fn = minilm._sentence_fn()
    ids16, mask16 = tok.encode_batch(sentences, pad_to=16)
    ids64, mask64 = tok.encode_batch(sentences, pad_to=64)
    e16, e64 = np.asarray(fn(params, ids16, mask16)), np.asarray(fn(params, ids64, mask64))
    np.testing.assert_allclose(e16, e64, atol=2e-5)
    np.testing.assert_allclose(e16 / np.linalg.norm(e16, axis=1, keepdims=True), a, atol=2e-6)
    # garbage ids in the masked positions change nothing; the mask is what matters
    garbage = np.where(mask64, ids64, np.random.default_rng(0).integers(1000, 30000, ids64.shape)).astype(np.int32)
    np.testing.assert_allclose(np.asarray(fn(params, garbage, mask64)), e64, atol=2e-5)
    unmasked = np.asarray(fn(params, garbage, np.ones_like(mask64)))
    assert np.abs(unmasked - e64).max() > 1e-2
    names = ["dining_table", "person", "potted_plant", "tv_monitor"]
    labels = minilm.label_embeddings(names, "The categories of the image are {}.", params=params)
    assert labels.shape == (4, 384)
    np.testing.assert_allclose(
        labels[0], minilm.encode_sentences(["The categories of the image are dining table."], params=params)[0], atol=2e-6
    )


def test_weight_mapping(params):
    from ltjax.assets import fetch
    from ltjax.models.pretrained import read_state_dict

    config = json.loads(fetch(minilm.CONFIG_ASSET).read_text())  # the hyper-parameters the module hard-codes
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (384, 6, 12)
    assert (config["intermediate_size"], config["vocab_size"], config["max_position_embeddings"]) == (1536, 30522, 512)
    assert (config["hidden_act"], config["layer_norm_eps"], config["type_vocab_size"]) == ("gelu", 1e-12, 2)
    sd = read_state_dict(fetch(minilm.WEIGHTS_ASSET))
    np.testing.assert_array_equal(
        params["layer_3"]["attention"]["query"]["kernel"], sd["encoder.layer.3.attention.self.query.weight"].T
    )
    np.testing.assert_array_equal(params["layer_5"]["output_LayerNorm"]["scale"], sd["encoder.layer.5.output.LayerNorm.weight"])
    np.testing.assert_array_equal(params["embeddings"]["word_embeddings"]["embedding"], sd["embeddings.word_embeddings.weight"])
    assert sum(np.size(x) for x in jax.tree.leaves(params)) == 22_565_376  # 22.7M minus the unused pooler
    with pytest.raises(ValueError, match="missing \\['embeddings.LayerNorm.bias'\\]"):
        minilm.bert_state_dict_to_flax({k: v for k, v in sd.items() if k != "embeddings.LayerNorm.bias"})
    with pytest.raises(ValueError, match="unexpected \\['cls.predictions.bias'\\]"):
        minilm.bert_state_dict_to_flax({**sd, "cls.predictions.bias": np.zeros(3)})
    bad = dict(sd)
    bad["encoder.layer.0.intermediate.dense.bias"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError, match="intermediate.dense.bias: shape \\[7\\]"):
        minilm.bert_state_dict_to_flax(bad)


# ---- the 'minilm' model ---------------------------------------------------------------------------


def test_model_builds_freezes_the_encoder_and_checks_its_inputs():
    cfg = model_defaults("minilm")
    model = build_model(cfg, 5, (16,), vocab_size=30522)
    ids = jnp.zeros((2, 16), jnp.int32)
    variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, ids, train=False))
    mask = trainable_mask(cfg, variables["params"])
    assert not any(jax.tree.leaves(mask["backbone"]["trunk"]["encoder"]))
    assert all(jax.tree.leaves(mask["backbone"]["trunk"]["mlp"])) and all(jax.tree.leaves(mask["head"]))
    cfg.freeze_encoder = False
    assert all(jax.tree.leaves(trainable_mask(cfg, variables["params"])))
    out = jax.eval_shape(lambda v: model.apply(v, ids, train=False), variables)
    assert out["logits"].shape == (2, 5) and out["features"].shape == (2, 256)
    with pytest.raises(ValueError, match="vocab_size 30522"):
        build_model(model_defaults("minilm"), 5, (16,), vocab_size=1000)
    with pytest.raises(ValueError, match="exceeds MiniLM's 512"):
        build_model(model_defaults("minilm"), 5, (600,), vocab_size=30522)


def _corpus(root, seed=0):
    """AAPD-style line files of English sentences: each of 5 labels has its own topic words."""
    rng = np.random.default_rng(seed)
    topics = {
        "sports": ["football", "match", "goal", "team", "coach"],
        "weather": ["rain", "sunny", "storm", "cloudy", "forecast"],
        "food": ["bread", "soup", "dinner", "cheese", "cook"],
        "music": ["guitar", "song", "concert", "piano", "band"],
        "travel": ["train", "airport", "hotel", "beach", "trip"],
    }
    filler = ["the", "a", "today", "we", "saw", "about", "very", "new", "report", "zqxvork"]
    names = list(topics)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 48), ("test", 24)):
        docs, labels = [], []
        for _ in range(n):
            y = [c for c in names if rng.random() < 0.4] or [names[rng.integers(len(names))]]
            words = list(rng.choice(filler, 4)) + [w for c in y for w in rng.choice(topics[c], 2)]
            rng.shuffle(words)
            docs.append(" ".join(words).capitalize() + ".")
            labels.append(" ".join(y))
        (root / f"text_{split}").write_text("\n".join(docs) + "\n")
        (root / f"label_{split}").write_text("\n".join(labels) + "\n")
    return root


@pytest.mark.slow  # ~20-30 s of compile on 2 CPU cores; `make test-slow`
def test_configs_text_trains_the_frozen_minilm_backbone(tmp_path, params):
    from ltjax.training.loop import Experiment, train_and_evaluate

    c = load_config(str(REPO / "configs" / "text.py"))
    c.model = model_defaults("minilm")
    c.data.tokenizer = "minilm"
    c.data.root = str(_corpus(tmp_path / "corpus"))
    c.data.storage = "files"
    c.data.max_length = 24
    c.data.batch_size = 16
    c.data.eval_batch_size = 32
    c.data.groups.mode = "quantile"
    c.optimizer.lr = 1e-2
    c.schedule.warmup_steps = 1
    c.train.num_epochs = 1  # 3 steps of 16 documents
    c.train.log_every = 3
    c.train.checkpoint_every = 100
    c.train.progress_bar = "off"
    workdir = tmp_path / "run"
    result = train_and_evaluate(c, str(workdir))
    assert np.isfinite(result["mAP"]) and result["step"] == 3
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    init = [r for r in records if r["kind"] == "init"]
    assert init == [{"step": 0, "kind": "init", "minilm_encoder_parameters": 22_565_376}]
    # the trained state still holds the pretrained (frozen) encoder
    exp = Experiment(c)
    state, step = exp.restore(str(workdir))
    assert step == 3
    got = jax.device_get(state.params["backbone"]["trunk"]["encoder"])
    np.testing.assert_array_equal(got["layer_2"]["intermediate"]["kernel"], params["layer_2"]["intermediate"]["kernel"])
    np.testing.assert_array_equal(got["embeddings"]["word_embeddings"]["embedding"], params["embeddings"]["word_embeddings"]["embedding"])
