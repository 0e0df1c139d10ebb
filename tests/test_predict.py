"""ltjax.predict: scores of new inputs equal the evaluation's on the same examples (feature vectors and
documents here; images in tests/test_custom.py), the CSV and its sidecar, and inputs the run cannot read."""
import csv
import json

import numpy as np
import pytest

from helpers import small_synthetic_config

from ltjax import predict


@pytest.fixture(scope="module")
def features_run(tmp_path_factory):
    from ltjax.training.loop import Experiment, train_and_evaluate

    w = tmp_path_factory.mktemp("predict") / "run"
    cfg = small_synthetic_config(**{"train.num_epochs": 1, "train.ema_decay": 0.9})
    train_and_evaluate(cfg, str(w))
    x = np.asarray(Experiment(cfg).dataset.split("test").inputs)
    np.save(w / "test.npy", x)
    return w, x


def test_predict_equals_evaluate_on_the_test_split_with_the_runs_ema_weights(features_run):
    w, x = features_run
    out = predict.predict(str(w), list(x))
    with np.load(w / "scores.npz") as z:
        np.testing.assert_array_equal(out["scores"], z["scores"])  # the evaluation scores the EMA weights too
    assert out["step"] == 16 and np.all(out["threshold"] == 0.5)
    assert out["predicted"][0] == [n for n, v in zip(out["class_names"], out["scores"][0]) if v >= 0.5]


def test_the_cli_writes_scores_labels_and_the_checkpoint_used(features_run, tmp_path, capsys):
    w, x = features_run
    assert predict.main(["--workdir", str(w), "--inputs", str(w / "test.npy"), "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.reader(open(tmp_path / "p.csv")))
    assert rows[0][:3] == ["input", "predicted", "class_00"] and len(rows) == len(x) + 1
    with np.load(w / "scores.npz") as z:
        np.testing.assert_allclose(np.array([[float(v) for v in r[2:]] for r in rows[1:]]), z["scores"], rtol=1e-5)
    meta = json.loads((tmp_path / "p.csv.json").read_text())
    assert meta["step"] == 16 and meta["weights"] == "ema" and meta["num_inputs"] == len(x)
    assert "with the checkpoint of step 16 (ema weights)" in capsys.readouterr().out


def test_inputs_of_another_kind_and_missing_inputs_are_clear_errors(features_run, tmp_path):
    w, _ = features_run
    (tmp_path / "docs.txt").write_text("a document\n")
    with pytest.raises(predict.PredictInputError, match="feature vectors; --inputs must be a .npy array"):
        predict.read_inputs(str(tmp_path / "docs.txt"), "features")
    with pytest.raises(predict.PredictInputError, match="does not exist"):
        predict.read_inputs(str(tmp_path / "nothing.npy"), "features")
    with pytest.raises(predict.PredictInputError, match="images; --inputs must be a folder of images"):
        predict.read_inputs(str(w / "test.npy"), "image")
    (tmp_path / "imgs").mkdir()
    with pytest.raises(predict.PredictInputError, match="holds no image files"):
        predict.read_inputs(str(tmp_path / "imgs"), "image")
    from ltjax.config import ConfigError

    with pytest.raises(ConfigError, match="needs --inputs"):
        predict.main(["--workdir", str(w)])


def test_documents_from_a_text_file_score_as_the_evaluation_did(tmp_path):
    from ltjax.config import load_config
    from ltjax.training.loop import train_and_evaluate

    lines = ["text,labels,split"]
    words = {"a": "effusion fluid pleural", "b": "cardiomegaly heart enlarged", "c": "nodule mass opacity"}
    rng = np.random.default_rng(0)
    test_docs = []
    for i in range(48):
        labels = [k for k in words if rng.random() < 0.4] or ["a"]
        doc = " ".join(rng.choice(" ".join(words[k] for k in labels).split(), size=6)) + f" case {i}"
        split = "test" if i % 4 == 0 else "train"
        lines.append(f"{doc},{'|'.join(labels)},{split}")
        if split == "test":
            test_docs.append(doc)
    (tmp_path / "docs.csv").write_text("\n".join(lines) + "\n")
    cfg = load_config("configs/custom.py:bce,text")
    cfg.data.manifest = str(tmp_path / "docs.csv")
    cfg.data.split_column = "split"
    cfg.data.storage = "files"
    cfg.data.batch_size = 8
    cfg.data.eval_batch_size = 8
    cfg.train.num_epochs = 1
    cfg.train.progress_bar = "off"
    cfg.eval.top_k = (1,)
    w = tmp_path / "run"
    train_and_evaluate(cfg, str(w))
    (tmp_path / "new.txt").write_text("\n".join(test_docs) + "\n")
    ids, docs = predict.read_inputs(str(tmp_path / "new.txt"), "text")
    assert ids == [str(i) for i in range(1, 13)] and docs == test_docs
    out = predict.predict(str(w), docs)
    with np.load(w / "scores.npz") as z:
        np.testing.assert_array_equal(out["scores"], z["scores"])
    # without the training data: the run's snapshot holds the vocabulary, classes and training labels
    (tmp_path / "docs.csv").rename(tmp_path / "elsewhere.csv")
    again = predict.predict(str(w), docs)
    np.testing.assert_array_equal(again["scores"], out["scores"])
    assert again["class_names"] == out["class_names"]
    # a run without a snapshot (made before they existed) needs its data, and says how to get one
    from ltjax.data import snapshot
    from ltjax.errors import SnapshotError

    for name in (snapshot.SNAPSHOT_JSON, snapshot.SNAPSHOT_NPZ):
        (w / name).unlink()
    with pytest.raises(SnapshotError, match="run `python -m ltjax.evaluate --workdir"):
        predict.predict(str(w), docs)
    (tmp_path / "elsewhere.csv").rename(tmp_path / "docs.csv")
    from ltjax import evaluate

    assert evaluate.main(["--workdir", str(w)]) == 0 and snapshot.exists(str(w))  # evaluate writes one
    (tmp_path / "docs.csv").unlink()
    np.testing.assert_array_equal(predict.predict(str(w), docs)["scores"], out["scores"])
