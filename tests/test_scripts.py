"""The benchmark scripts stay runnable: each runs at a toy size and prints its table (no timing is
asserted; performance is measured by running them for real, see docs/PERFORMANCE.md)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO


def _run(script, *args, timeout=300):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the scripts set up their own (fake) devices
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_bench_step_runs_both_pipelines(tmp_path):
    out = tmp_path / "step.json"
    r = _run("bench_step.py", "--devices", "1", "2", "--steps", "3", "--warmup", "1", "--json", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(x["devices"], x["pipeline"]) for x in rows] == [(1, "host"), (1, "on_device"), (2, "host"), (2, "on_device")]
    assert all(x["loop_examples_per_s"] > 0 for x in rows)
    assert "| devices | pipeline |" in r.stdout


def test_bench_images_runs_host_and_device_rows(tmp_path):
    out = tmp_path / "images.json"
    r = _run("bench_images.py", "--images", "64", "--sizes", "32", "--batch-size", "8", "--workers", "0",
             "--storages", "files", "--dir", str(tmp_path / "work"), "--json", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    whats = [x["what"] for x in json.loads(out.read_text())["rows"]]
    assert any(w.startswith("train stream (DB") for w in whats)
    assert any(w.startswith("train stream, all epochs") for w in whats)
    assert any(w.startswith("on_device augmentation") for w in whats)


def test_ablate_cssfe_plans_variant_switch_and_baseline_rows():
    import pytest

    from helpers import import_script

    ablate = import_script("ablate_cssfe")
    rows = ablate.plan_rows("configs/tiles_voc_lt.py:cssfe", ["net0", "net3"], ["mask_mode=multiply"],
                            ["configs/tiles_voc_lt.py:bce"])
    assert rows == [
        ("cssfe_net0", "configs/tiles_voc_lt.py:cssfe", ["--config.method.variant=net0"]),
        ("cssfe_net3", "configs/tiles_voc_lt.py:cssfe", ["--config.method.variant=net3"]),
        ("cssfe_net3_mask_mode=multiply", "configs/tiles_voc_lt.py:cssfe",
         ["--config.method.variant=net3", "--config.method.mask_mode=multiply"]),
        ("tiles_voc_lt_bce", "configs/tiles_voc_lt.py:bce", []),
    ]
    with pytest.raises(SystemExit, match="not one of net0"):
        ablate.plan_rows("c.py", ["net4"], [], [])
    with pytest.raises(SystemExit, match="not FIELD=VALUE"):
        ablate.plan_rows("c.py", [], ["mask_mode"], [])
    with pytest.raises(SystemExit, match="share a name"):
        ablate.plan_rows("c.py", ["net0", "net0"], [], [])


def test_ablate_ldrnet_plans_the_stage1_uniform_and_alpha_rows():
    import pytest

    from helpers import import_script

    ablate = import_script("ablate_ldrnet")
    assert ablate.plan_rows([0.0, 0.9], True) == [
        ("stage1", ["--config.method.rounds=0"]),
        ("uniform", ["--config.method.sampling=uniform"]),
        ("alpha=0", ["--config.method.sampling=reverse", "--config.method.alpha=0"]),
        ("alpha=0.9", ["--config.method.sampling=reverse", "--config.method.alpha=0.9"]),
    ]
    assert [r[0] for r in ablate.plan_rows([1.5], False)] == ["stage1", "alpha=1.5"]
    with pytest.raises(SystemExit, match="not >= 0"):
        ablate.plan_rows([-1.0], True)
    with pytest.raises(SystemExit, match="share a name"):
        ablate.plan_rows([0.5, 0.5], True)


def test_ablate_comic_rows_baselines_switches_and_the_rlc_analysis():
    from helpers import import_script

    mod = import_script("ablate_comic")
    plan = mod.plan_rows("configs/x.py:comic", ["no_rlc", "head_model"],
                         ["configs/x.py:bce", "configs/x.py:hill --config.method.variant=splc"], ["tau=0.6"])
    rows = {name: (spec, extra) for name, spec, extra in plan}
    assert rows["no_rlc"] == ("configs/x.py:comic", ["--config.method.rlc=false"])
    assert rows["comic"] == ("configs/x.py:comic", [])  # the branch row needs the comic runs
    assert rows["comic_tau=0.6"][1] == ["--config.method.tau=0.6"]
    assert rows["x_hill_variant=splc"] == ("configs/x.py:hill", ["--config.method.variant=splc"])
    assert "head_model" not in rows and "x_bce" in rows
    with pytest.raises(SystemExit):
        mod.plan_rows("c", ["nope"], [])
    runs = [{"method_summary": {"rlc_per_epoch": [{"epoch": 1, "recalled": 4, "true": 1, "false": 3, "hidden_seen": 9},
                                                  {"epoch": 2, "recalled": 2, "true": 2, "false": 0, "hidden_seen": 9}]}},
            {"method_summary": {"rlc_per_epoch": [{"epoch": 1, "recalled": 6, "true": 3, "false": 3, "hidden_seen": 9},
                                                  {"epoch": 2, "recalled": 0, "true": 0, "false": 0, "hidden_seen": 9}]}}]
    assert mod.rlc_analysis(runs) == [{"recalled": 5, "true": 2, "false": 3, "hidden_seen": 9, "epoch": 1},
                                      {"recalled": 1, "true": 1, "false": 0, "hidden_seen": 9, "epoch": 2}]


@pytest.mark.slow  # ~30 s: four short runs through the CLI; ltjax.compare itself is tested in test_compare.py
def test_run_table_with_a_baseline_appends_the_comparison(tmp_path):
    import json

    from helpers import import_script

    run_table = import_script("run_table")
    tiny = "tests/configs/tiny_synthetic.py"
    run_table.main(["--configs", tiny, f"{tiny}:1", "--seeds", "0", "1", "--workdir", str(tmp_path),
                    "--baseline", tiny, "--reps", "50", "--no-calibration"])
    table = (tmp_path / "table.md").read_text()
    assert "Δ mAP vs tiny_synthetic [95% CI]" in table and "| tiny_synthetic_1 | 2 |" in table
    result = json.loads((tmp_path / "compare.json").read_text())
    assert result["baseline"] == "tiny_synthetic" and set(result["methods"]) == {"tiny_synthetic", "tiny_synthetic_1"}


def test_bench_allocator_reports_the_childs_own_faults_and_peak_memory(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "scripts"))
    import bench_allocator

    # the counters are the child's own: it reports its faults just before it exits, and each of two
    # runs (not a running total) must read at least that and not much more
    out, own = tmp_path / "alloc.json", tmp_path / "own.txt"
    child = ("import resource, numpy as np\nfor _ in range(20): np.ones(8_000_000)\n"
             f"open({str(own)!r}, 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_minflt))")
    r = _run("bench_allocator.py", "--allocators", "glibc", "glibc", "--json", str(out), "--", sys.executable, "-c", child)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("| glibc |") == 2
    res = json.loads(out.read_text())["results"]["glibc"]
    assert int(own.read_text()) <= res["minflt"] <= 1.5 * int(own.read_text()) + 1000
    assert res["max_rss_mb"] >= 64  # the child held a 64 MB array
    assert res["wall_s"] > 0 and res["user_s"] + res["sys_s"] > 0
    # environments: the preload and its settings, nothing inherited, and 'not installed' when absent
    monkeypatch.setenv("LD_PRELOAD", "/somewhere/else.so")
    assert "LD_PRELOAD" not in bench_allocator.allocator_env("glibc")
    monkeypatch.setattr(bench_allocator, "find_library", lambda name: f"/lib/{name}")
    env = bench_allocator.allocator_env("jemalloc")
    assert env["LD_PRELOAD"] == "/lib/libjemalloc.so.2" and env["MALLOC_CONF"] == "oversize_threshold:0"
    monkeypatch.setattr(bench_allocator, "find_library", lambda name: None)
    assert bench_allocator.allocator_env("tcmalloc") is None
    # the ex/s column reads the run's metrics.jsonl, skipping the first (compiling) record
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in [
        {"kind": "train", "examples_per_s": 1.0}, {"kind": "eval", "mAP": 0.5},
        {"kind": "train", "examples_per_s": 10.0}, {"kind": "train", "examples_per_s": 30.0},
        {"kind": "train", "examples_per_s": 20.0}]))
    assert bench_allocator.median_examples_per_s(str(tmp_path)) == 20.0


def test_tune_lr_choice_grid_extension_and_names():
    from helpers import import_script

    mod = import_script("tune_lr")
    assert mod.choose({1.0: 0.5, 2.0: 0.7, 4.0: 0.7}) == 2.0  # a tie goes to the smaller factor
    assert mod.next_factor({1.0: 0.5, 2.0: 0.7, 4.0: 0.6}) is None  # an interior optimum: the grid is enough
    assert mod.next_factor({1.0: 0.5, 2.0: 0.6, 4.0: 0.7}) == 8.0  # the top edge: double past it
    assert mod.next_factor({1.0: 0.9, 2.0: 0.6}) == 0.5  # the bottom edge: halve past it
    assert mod.name_of("configs/x.py:hill --config.method.variant=splc") == "x_hill_variant=splc"
    assert mod.split_spec("configs/x.py:hill --config.method.variant=splc") == (
        "configs/x.py:hill", ["--config.method.variant=splc"])
    with pytest.raises(SystemExit):
        mod.split_spec("configs/x.py:hill --bogus")
    assert mod.base_lr("configs/tiles_voc_lt.py:comic", []) == pytest.approx(0.05 / 20)  # the recipe's, per loss
    assert mod.base_lr("configs/tiles_voc_lt.py:bce", ["--config.optimizer.lr=0.3"]) == 0.3


@pytest.mark.slow  # ~1 min: five short runs through the CLI
def test_tune_lr_selects_on_val_then_reports_test_seeds(tmp_path):
    import json

    from helpers import import_script

    tiny = "tests/configs/tiny_synthetic.py"
    import_script("tune_lr").main(["--configs", tiny, "--factors", "1", "4", "--extend", "1", "--seeds", "0", "1",
                                   "--workdir", str(tmp_path)])
    result = json.loads((tmp_path / "tune_lr.json").read_text())["configs"]["tiny_synthetic"]
    val = {float(f): v for f, v in result["val_mAP"].items()}
    tried = sorted(val)
    assert tried in ([1.0, 4.0], [0.5, 1.0, 4.0], [1.0, 4.0, 8.0])  # grown past the edge the choice sat on
    assert result["chosen_factor"] == max(tried, key=lambda f: (val[f], -f))
    for f in tried:  # selection runs: trained without the carved val split, scored on it
        run = tmp_path / "tune" / "tiny_synthetic" / f"x{f:g}"
        assert json.loads((run / "eval.json").read_text())["split"] == "val"
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["data"]["val_from_train"] == 0.2 and cfg["optimizer"]["lr"] == pytest.approx(
            result["base_lr"] * f)
    seeds = [json.loads((tmp_path / "tiny_synthetic" / f"x{result['chosen_factor']:g}" / f"seed_{s}" / "eval.json")
                        .read_text()) for s in (0, 1)]
    assert [r["split"] for r in seeds] == ["test", "test"]
    assert result["test"]["mAP"]["values"] == [r["mAP"] for r in seeds]


def _numpy_ap(scores, labels):
    """AP of one class written out: the mean over its positives of the precision at that positive's rank."""
    order = np.argsort(-scores, kind="stable")
    hits = labels[order] > 0
    if not hits.any():
        return np.nan
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


@pytest.mark.slow  # ~1 min: six short runs through the CLI
def test_tune_lr_test_half_chooses_on_one_half_and_reports_the_other(tmp_path):
    import json

    from helpers import import_script

    mod = import_script("tune_lr")
    tiny = "tests/configs/tiny_synthetic.py"
    mod.main(["--configs", tiny, "--factors", "1", "4", "--extend", "1", "--seeds", "0", "1", "--select", "test_half",
              "--workdir", str(tmp_path)])
    result = json.loads((tmp_path / "tune_lr.json").read_text())
    cfg = result["configs"]["tiny_synthetic"]
    z = np.load(tmp_path / "tiny_synthetic" / "x1" / "seed_0" / "scores.npz")
    sel_rows, rep_rows = mod.test_halves(z["labels"], 0)
    assert not set(sel_rows) & set(rep_rows) and len(sel_rows) + len(rep_rows) == len(z["labels"])
    assert result["halves"] == [len(sel_rows), len(rep_rows)]

    def half_map(factor, seed, rows):
        with np.load(tmp_path / "tiny_synthetic" / f"x{factor:g}" / f"seed_{seed}" / "scores.npz") as r:
            s, y = r["scores"][rows], r["labels"][rows]
        return np.nanmean([_numpy_ap(s[:, c], y[:, c]) for c in range(y.shape[1])])

    sel = {float(f): v for f, v in cfg["selection_half_mAP"].items()}
    for f, v in sel.items():  # the selection statistic: the seeds' mean mAP on the first half
        assert v == pytest.approx(np.mean([half_map(f, s, sel_rows) for s in (0, 1)]), abs=1e-5)
    assert cfg["chosen_factor"] == max(sel, key=lambda f: (sel[f], -f))
    f = cfg["chosen_factor"]
    assert cfg["report_half"]["total"]["values"] == pytest.approx([half_map(f, s, rep_rows) for s in (0, 1)], abs=1e-5)
    assert all(json.loads((tmp_path / "tiny_synthetic" / f"x{g:g}" / f"seed_{s}" / "eval.json").read_text())["split"]
               == "test" for g in sel for s in (0, 1))


def test_probe_httn_class_means_and_a_run_whose_own_scores_match_its_evaluation(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import probe_httn
    from helpers import small_synthetic_config
    from ltjax.methods import METHODS
    from ltjax.training import loop

    # class means by hand: unit vectors e0, e1 and (e0 + e1) / sqrt 2 as documents of labels 0 / 1 / both
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]) / np.array([[1.0], [1.0], [np.sqrt(2)]])
    labels = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    mean0 = (emb[0] + emb[2]) / 2
    got = probe_httn.class_mean_scores(emb, labels, np.array([[0.6, 0.8]]))
    np.testing.assert_allclose(got[0, 0], np.dot([0.6, 0.8], mean0 / np.linalg.norm(mean0)))
    assert probe_httn.group_map(np.array([[0.9], [0.1], [0.5]]), np.array([[1.0], [0.0], [1.0]]), [0]) == (100.0, 1)

    c = small_synthetic_config(**{"train.num_epochs": 1, "mesh.data": 1})
    c.method = METHODS.get("httn").defaults()
    c.method.l_tail, c.method.rounds, c.method.shots = 4, 3, 2
    result = loop.train_and_evaluate(c, str(tmp_path))
    r = probe_httn.probe(str(tmp_path))
    tail = set(result["method_summary"]["tail_labels"])
    aps = {g: [x["ap"] for x in result["per_class"] if (int(x["index"]) in tail) == (g == "tail") and x["ap"] is not None]
           for g in ("tail", "head")}
    for g in ("tail", "head"):  # the run's own scores give the evaluation's APs
        assert r[g]["labels"] == len(aps[g])
        np.testing.assert_allclose(r[g]["run"], 100 * np.mean(aps[g]), atol=1e-3)
        assert 0 <= r[g]["class_means"] <= 100 and 0 <= r[g]["linear_probe"] <= 100
