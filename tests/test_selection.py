"""train.select_on: checkpoint selection on a validation split (ltjax/training/selection.py)."""
import json
import shutil

import numpy as np
import pytest

from ltjax.errors import ConfigError
from ltjax.training import selection
from helpers import small_synthetic_config

SPLITS = {"train": None, "val": None, "test": None}


def test_parse_select_on():
    groups, top_k = ("head", "medium", "tail"), (1, 3)
    assert selection.parse_select_on("", "test", SPLITS, groups, top_k) is None
    assert selection.parse_select_on("val:mAP", "test", SPLITS, groups, top_k) == ("val", "mAP")
    assert selection.parse_select_on("val:AUC", "test", SPLITS, groups, top_k) == ("val", "auc_macro")
    assert selection.parse_select_on(" val : mAP_tail", "test", SPLITS, groups, top_k) == ("val", "mAP_tail")
    with pytest.raises(ConfigError, match="never used for selection"):
        selection.parse_select_on("test:mAP", "test", SPLITS, groups, top_k)
    with pytest.raises(ConfigError, match="no 'val' split.*data.val_fraction"):
        selection.parse_select_on("val:mAP", "test", {"train": 0, "test": 0}, groups, top_k)
    with pytest.raises(ConfigError, match="unknown metric 'mAP_rare'.*mAP_tail.*P@3"):
        selection.parse_select_on("val:mAP_rare", "test", SPLITS, groups, top_k)
    with pytest.raises(ConfigError, match="unknown metric 'odir_final'"):  # only where the dataset reports it
        selection.parse_select_on("val:odir_final", "test", SPLITS, groups, top_k)
    assert selection.parse_select_on("val:odir_final", "test", SPLITS, groups, top_k, extra=("odir_final",)) == \
        ("val", "odir_final")
    assert selection.metric_value({"odir": {"final": 0.7}}, "odir_final") == 0.7
    with pytest.raises(ConfigError, match="SPLIT:METRIC"):
        selection.parse_select_on("mAP", "test", SPLITS, groups, top_k)


def test_consider_keeps_the_first_of_equal_values_and_metric_value_reads_groups():
    r = selection.new_record("val", "mAP")
    assert selection.consider(r, 10, 0.5)
    assert not selection.consider(r, 20, 0.5)  # a tie keeps the earlier checkpoint
    assert selection.consider(r, 30, 0.6)
    assert not selection.consider(r, 40, 0.1)
    assert (r["best_step"], r["best_value"]) == (30, 0.6)
    assert r["history"] == [[10, 0.5], [20, 0.5], [30, 0.6], [40, 0.1]]
    result = {"mAP": 0.4, "group_mAP": {"tail": None, "head": 0.9}, "mACC": float("nan")}
    assert selection.metric_value(result, "mAP_head") == 0.9
    assert selection.metric_value(result, "mAP_tail") == -np.inf  # undefined: never selected
    assert selection.metric_value(result, "mACC") == -np.inf


def _config(epochs=4):
    return small_synthetic_config(**{
        "data.num_val": 160, "train.num_epochs": epochs, "train.select_on": "val:mAP",
        # a large constant lr so that the validation mAP moves between epochs (a best before the end)
        "optimizer.lr": 0.3, "schedule.name": "constant", "schedule.warmup_steps": 0,
    })


def test_selection_never_scores_the_test_split_and_reports_the_best_checkpoint(tmp_path, monkeypatch):
    from ltjax.training import loop
    from ltjax.training.experiment import Experiment

    scored = []
    predict = Experiment.predict

    def spy(self, params, batch_stats, split_name, method_state=None):
        scored.append(split_name)
        return predict(self, params, batch_stats, split_name, method_state)

    monkeypatch.setattr(Experiment, "predict", spy)
    result = loop.train_and_evaluate(_config(), str(tmp_path))
    # 4 epochs of 16 steps: a candidate at every epoch end, all on val; test once, at the end
    assert scored == ["val"] * 4 + ["test"]
    sel = result["selection"]
    history = np.array(sel["history"])
    assert history[:, 0].tolist() == [16, 32, 48, 64]
    best = int(np.argmax(history[:, 1]))  # the first maximum
    assert sel["best_step"] == int(history[best, 0]) and sel["best_value"] == history[best, 1]
    assert result["step"] == sel["best_step"]
    assert json.loads((tmp_path / "selection.json").read_text()) == sel

    # the reported test numbers are those of the selected weights, scored independently
    monkeypatch.setattr(Experiment, "predict", predict)
    exp = Experiment(_config())
    state, step, record = exp.restore_selected(str(tmp_path))
    assert step == sel["best_step"] and record == sel
    from ltjax import metrics

    scores, labels = exp.predict(state.params, state.batch_stats, "val", state.method_state)
    val = metrics.evaluate(scores, labels, exp.meta.groups, exp.meta.class_counts, exp.meta.class_names)
    assert val["mAP"] == pytest.approx(sel["best_value"], abs=1e-6)
    scores, labels = exp.predict(state.params, state.batch_stats, "test", state.method_state)
    test = metrics.evaluate(scores, labels, exp.meta.groups, exp.meta.class_counts, exp.meta.class_names)
    assert test["mAP"] == pytest.approx(result["mAP"], abs=1e-6)


def test_selection_resumes_exactly(tmp_path):
    from ltjax.training import loop

    first = loop.train_and_evaluate(_config(), str(tmp_path / "a"))
    # drop the newest training checkpoints (keep_checkpoints 3: 48, 56, 64 -> resume at 48) and the
    # outputs: the resumed run must re-reach the same candidates and choose the same checkpoint
    for step in (56, 64):
        shutil.rmtree(tmp_path / "a" / "checkpoints" / str(step))
    (tmp_path / "a" / "eval.json").unlink()
    (tmp_path / "a" / "selection.json").unlink()
    again = loop.train_and_evaluate(_config(), str(tmp_path / "a"))
    assert again["selection"] == first["selection"]
    assert again["mAP"] == first["mAP"] and again["step"] == first["step"]


def test_select_on_without_a_validation_split_fails_before_training(tmp_path):
    from ltjax.training import loop

    c = small_synthetic_config(**{"train.select_on": "val:mAP"})
    with pytest.raises(ConfigError, match="no 'val' split.*data.num_val"):
        loop.train_and_evaluate(c, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
