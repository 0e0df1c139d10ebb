"""GloVe 6B 50-d for the text models' embedding table: the real vectors (fetched through ltjax.assets,
cached) have the known neighbours, alignment to a tiny vocabulary by hand, the config checks, the init hook's
coverage numbers, and a short configs/text.py run with ``--config.model.pretrained_embeddings=glove50``."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax.config import apply_overrides, load_config
from ltjax.data import build_dataset
from ltjax.data.text import Vocabulary
from ltjax.models import MODELS, build_model, model_defaults
from ltjax.models import glove

from helpers import REPO


@pytest.fixture(scope="module")
def wv():
    return glove.load_word_vectors("glove50")


def test_known_neighbours(wv):
    assert len(wv.words) == 400_000 and wv.dim == 50 and wv.vectors.dtype == np.float32
    np.testing.assert_allclose(wv["the"][:3], [0.418, 0.24968, -0.41242])  # the first line of glove.6B.50d.txt
    assert {"queen", "prince"} & set(wv.nearest("king", 5))
    assert "paris" in wv.nearest("france", 5)
    assert "soccer" in wv.nearest("football", 3)


def test_align_on_a_tiny_vocabulary(wv):
    tokens = ("the", "King", "zqxvork", "paris")  # ids 2..5; "zqxvork" is no GloVe word
    rng = np.random.default_rng(0)
    table = rng.standard_normal((6, 50)).astype(np.float32)
    new, covered = glove.align(table, tokens, wv)
    np.testing.assert_array_equal(covered, [False, False, True, True, False, True])
    np.testing.assert_array_equal(new[0], np.zeros(50))  # padding row
    np.testing.assert_array_equal(new[1], table[1])  # OOV id keeps its random row
    np.testing.assert_array_equal(new[2], wv["the"])
    np.testing.assert_array_equal(new[3], wv["king"])  # looked up lower-cased
    np.testing.assert_array_equal(new[4], table[4])  # unknown word keeps its random row
    np.testing.assert_array_equal(new[5], wv["paris"])
    assert not np.shares_memory(new, table) and table[0].any()  # the input is not modified
    with pytest.raises(ValueError, match="6 rows but the vocabulary has 3 tokens"):
        glove.align(table, tokens[:3], wv)
    vocab = Vocabulary(tokens, tokenizer="words", lowercase=False)
    # tokens: the the King zqxvork unseen -> ids 2 2 3 4 1: covered 2, 2, 3 -> 3 of 5
    assert glove.token_coverage(vocab, ["the the King", "zqxvork unseen"], covered) == pytest.approx(3 / 5)


def test_config_checks():
    cfg = model_defaults("text_pool")
    cfg.pretrained_embeddings = "glove50"
    with pytest.raises(ValueError, match="has 50-d vectors but model.embed_dim=128.*embed_dim=50"):
        build_model(cfg, 3, (8,), vocab_size=10)
    cfg.embed_dim = 50
    build_model(cfg, 3, (8,), vocab_size=10)
    cfg.pretrained_embeddings = "glove300"
    with pytest.raises(ValueError, match="unknown model.pretrained_embeddings 'glove300'"):
        build_model(cfg, 3, (8,), vocab_size=10)
    bilstm = model_defaults("text_bilstm")
    bilstm.pretrained_embeddings = "glove50"
    with pytest.raises(ValueError, match="model.embed_dim=300"):
        build_model(bilstm, 3, (8,), vocab_size=10)


def _corpus(root):
    rng = np.random.default_rng(0)
    topics = {
        "royal": ["king", "queen", "throne", "palace"],
        "city": ["paris", "london", "street", "museum"],
        "sport": ["football", "goal", "team", "coach"],
        "food": ["bread", "cheese", "soup", "dinner"],
        "novel": ["zqxvork", "blorptang", "Frumious", "wug"],  # made-up words (GloVe may know some)
    }
    filler = ["the", "a", "of", "today", "new", "very", "xyzzyq"]
    names = list(topics)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 48), ("test", 24)):
        docs, labels = [], []
        for _ in range(n):
            y = [c for c in names if rng.random() < 0.35] or [names[rng.integers(len(names))]]
            words = list(rng.choice(filler, 3)) + [w for c in y for w in rng.choice(topics[c], 2)]
            rng.shuffle(words)
            docs.append(" ".join(words))
            labels.append(" ".join(y))
        (root / f"text_{split}").write_text("\n".join(docs) + "\n")
        (root / f"label_{split}").write_text("\n".join(labels) + "\n")
    return root


def test_init_hook_of_both_text_models(tmp_path, wv):
    data = load_config(str(REPO / "configs" / "text.py")).data
    data.root, data.storage, data.min_freq, data.max_length = str(_corpus(tmp_path / "c")), "files", 1, 12
    ds = build_dataset(data)
    vocab = ds.eval_transform.vocab
    for name in ("text_pool", "text_bilstm"):
        cfg = model_defaults(name)
        cfg.embed_dim = 50
        if name == "text_bilstm":
            cfg.lstm_hidden = 4
        model = build_model(cfg, ds.meta.num_classes, ds.meta.input_shape, vocab_size=ds.meta.vocab_size)
        ids = jnp.zeros((1, *ds.meta.input_shape), jnp.int32)
        shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, ids, train=False))
        variables = jax.tree.map(lambda s: np.ones(s.shape, s.dtype), {"params": shapes["params"], "batch_stats": {}})
        hook = MODELS.get(name).init_hook
        assert hook(cfg, variables, ds) is None  # pretrained_embeddings="" (default): nothing to do
        cfg.pretrained_embeddings = "glove50"
        out, info = hook(cfg, variables, ds)
        table = out["params"]["backbone"]["trunk"]["embed"]["embedding"]
        for token in ("king", "paris", "the"):
            np.testing.assert_array_equal(table[vocab.index[token]], wv[token])
        unknown = [t for t in vocab.tokens if t not in wv]
        assert "zqxvork" in unknown and "xyzzyq" in unknown
        for row in [1] + [vocab.index[t] for t in unknown]:  # OOV id and words GloVe lacks: init values kept
            np.testing.assert_array_equal(table[row], 1.0)
        np.testing.assert_array_equal(table[0], 0.0)
        assert variables["params"]["backbone"]["trunk"]["embed"]["embedding"][0].all()  # input untouched
        assert info["glove_rows"] == len(vocab.tokens) - len(unknown)
        assert info["glove_vocab_coverage"] == pytest.approx(1 - len(unknown) / len(vocab.tokens))
        assert 0.5 < info["glove_token_coverage"] < 1.0
    minilm_data = load_config(str(REPO / "configs" / "text.py")).data
    minilm_data.update(root=data.root, storage="files", tokenizer="minilm", max_length=12)
    with pytest.raises(ValueError, match="needs the word vocabulary"):
        MODELS.get("text_bilstm").init_hook(cfg, variables, build_dataset(minilm_data))


def test_configs_text_trains_with_glove(tmp_path, wv):
    from ltjax.training.loop import Experiment, train_and_evaluate

    c = load_config(str(REPO / "configs" / "text.py"))
    c.unlock()
    c.data.root = str(_corpus(tmp_path / "corpus"))
    apply_overrides(c, [
        ("model.pretrained_embeddings", "glove50"), ("model.embed_dim", "50"), ("model.hidden", "(16,)"),
        ("data.storage", "files"), ("data.min_freq", "1"), ("data.max_length", "12"), ("data.batch_size", "16"),
        ("data.eval_batch_size", "32"), ("data.groups.mode", "quantile"), ("schedule.warmup_steps", "1"),
        ("train.num_epochs", "2"), ("train.log_every", "3"), ("train.checkpoint_every", "100"),
        ("train.progress_bar", "off"),
    ])
    exp = Experiment(c)
    state = exp.initial_state()
    table = np.asarray(jax.device_get(state.params["backbone"]["trunk"]["embed"]["embedding"]))
    vocab = exp.dataset.eval_transform.vocab
    np.testing.assert_array_equal(table[vocab.index["queen"]], wv["queen"])
    assert exp.init_info["glove_vocab_coverage"] < 1.0
    workdir = tmp_path / "run"
    result = train_and_evaluate(c, str(workdir), dataset=exp.dataset)
    assert np.isfinite(result["mAP"]) and result["step"] == 6
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    (init,) = [r for r in records if r["kind"] == "init"]
    assert init["step"] == 0 and init == {"step": 0, "kind": "init", **exp.init_info}
    print("GloVe coverage on the fixture:", exp.init_info)


def test_a_users_vectors_file_in_the_glove_or_word2vec_text_format(tmp_path):
    """model.pretrained_embeddings=PATH: a word2vec header is skipped, only the vocabulary's words are kept
    (looked up lower-cased), the width must match model.embed_dim, and a missing file is a clear error."""
    data = load_config(str(REPO / "configs" / "text.py")).data
    data.root, data.storage, data.min_freq, data.max_length = str(_corpus(tmp_path / "c")), "files", 1, 12
    ds = build_dataset(data)
    vocab = ds.eval_transform.vocab
    path = tmp_path / "vectors.txt"
    path.write_text("3 4\nKing 1 2 3 4\nparis 0.5 0.5 0.5 0.5\nnotinvocab 9 9 9 9\nking 7 7 7 7\n")
    vec = glove.load_text_vectors(str(path), keep={t.lower() for t in vocab.tokens})
    assert vec.dim == 4 and "notinvocab" not in vec and "king" in vec
    np.testing.assert_array_equal(vec["king"], [1, 2, 3, 4])  # the first spelling wins
    cfg = model_defaults("text_pool")
    cfg.embed_dim = 4
    model = build_model(cfg, ds.meta.num_classes, ds.meta.input_shape, vocab_size=ds.meta.vocab_size)
    ids = jnp.zeros((1, *ds.meta.input_shape), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, ids, train=False))
    variables = jax.tree.map(lambda s: np.ones(s.shape, s.dtype), {"params": shapes["params"], "batch_stats": {}})
    cfg.pretrained_embeddings = str(path)
    out, info = MODELS.get("text_pool").init_hook(cfg, variables, ds)
    table = out["params"]["backbone"]["trunk"]["embed"]["embedding"]
    np.testing.assert_array_equal(table[vocab.index["king"]], [1, 2, 3, 4])
    np.testing.assert_array_equal(table[vocab.index["paris"]], [0.5] * 4)
    assert info["glove_rows"] == 2
    cfg.embed_dim = 5
    with pytest.raises(ValueError, match="embed_dim=4"):
        MODELS.get("text_pool").init_hook(cfg, variables, ds)
    with pytest.raises(ValueError, match="neither a registered choice"):
        glove.check_choice(str(tmp_path / "missing.txt"), 300)
