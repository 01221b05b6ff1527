"""The training runner in process: the run folder, checkpoints, resume, early stopping, SignAnnealing,
every experiment for one epoch, and the sweep summary."""

import json

import pytest
import torch
from cli_helpers import compose_config, deterministic, read_jsonl, tiny_cache, tiny_overrides
from omegaconf import OmegaConf

from nwtrain.cli.callbacks import SweepSummary, summarize_sweep
from nwtrain.cli.evaluate import evaluate_checkpoint
from nwtrain.errors import ConfigError
from nwtrain.runs import train
from nwtrain.training.checkpoint import load_checkpoint, save_checkpoint

EXPERIMENTS = [
    "yesno_h1v1_plain",
    "yesno_h1v1_hw",
    "yesno_h1v1_mismatch",
    "yesno_h1v2_plain",
    "yesno_h1v2_hw",
    "yesno_h1v2_mismatch",
    "yesno_lif",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory)


@pytest.fixture
def run(cache, tmp_path):
    """``run(name, *overrides)``: train a tiny config into ``tmp_path/name``; returns its summary."""

    def _run(name, *overrides):
        out = tmp_path / name
        return train(
            compose_config(tiny_overrides(cache, f"paths.output_dir={out}", "logger=jsonl", *overrides))
        )

    return _run


def test_one_epoch_run_folder_and_checkpoint(run, tmp_path):
    summary = run("a", "logger=tensorboard")
    out = tmp_path / "a"
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 1
    assert summary["best_val_acc"] == read_jsonl(out / "metrics.jsonl")[0]["accuracy/val"]
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "spike_raster.png",
        "training_curves.png",
        "weight_signs.png",
    ]
    assert any((out / "tensorboard").glob("events.*"))

    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert (ckpt["epoch"], ckpt["batch"], ckpt["best_epoch"]) == (1, 0, 1)
    assert ckpt["best_val_acc"] == summary["best_val_acc"]
    assert set(ckpt["rng"]) == {"torch", "cuda", "numpy", "python", "mismatch"}
    # The default experiment is mismatch-aware: its dense weights are SignAnnealing's parametrisation.
    assert (
        "param_groups" in ckpt["optimizer"] and "syn_hidden.parametrizations.weight.original" in ckpt["model"]
    )
    assert (
        (ckpt["chip"], ckpt["variant"]) == ("h1v1", "mismatch_aware") == (summary["chip"], summary["variant"])
    )
    config = OmegaConf.create(ckpt["config"])  # the resolved config, as YAML
    assert config.model.hidden_size == 8 and config.paths.output_dir == str(out)
    assert ckpt["classes"] == ["yes", "no"] and ckpt["n_channels"] == 13


@pytest.mark.parametrize("optim", ["adam", "speech"])  # speech: a cosine learning-rate schedule
def test_resume_from_last_checkpoint_matches_an_uninterrupted_run(run, tmp_path, optim):
    straight = run("straight", "trainer.epochs=3", f"optim={optim}")
    run("first", "trainer.epochs=1", f"optim={optim}")
    resumed = run(
        "resumed",
        "trainer.epochs=3",
        f"optim={optim}",
        f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}",
    )
    history = read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
    assert len(history) == 3  # the resumed folder carries the whole history
    assert deterministic(history) == deterministic(read_jsonl(tmp_path / "straight" / "metrics.jsonl"))
    for key in ("best_val_acc", "best_epoch", "test_acc", "test_confusion"):
        assert resumed[key] == straight[key]


def test_resume_refuses_a_different_model(run, tmp_path):
    run("first")
    with pytest.raises(ConfigError, match=r"ckpt_path: .*model.hidden_size: 8 -> 16"):
        run("other", "model.hidden_size=16", f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}")


def test_a_checkpoint_from_before_the_objective_setting_resumes(run, tmp_path):
    """A checkpoint whose stored config predates ``loss.objective``, ``trainer.anneal_epochs`` and the
    ``quant`` group resumes: a classifier on the variant's grid is what it trained; another objective is
    still a change resume refuses."""
    run("first")
    ckpt = load_checkpoint(tmp_path / "first" / "checkpoints" / "last.ckpt")
    old = OmegaConf.create(ckpt["config"])
    del old.loss["objective"], old.trainer["anneal_epochs"], old["quant"], old.model["quantizer"]
    old_ckpt = tmp_path / "old.ckpt"
    save_checkpoint(old_ckpt, {**ckpt, "config": OmegaConf.to_yaml(old)})
    assert run("resumed", "trainer.epochs=2", f"ckpt_path={old_ckpt}")["epochs_completed"] == 2
    with pytest.raises(
        ConfigError,
        match=r"loss\.objective\._target_: None -> 'nwtrain\.training\.objectives\.RateRegression'",
    ):
        run("other", "loss=rate_regression", "trainer.epochs=2", f"ckpt_path={old_ckpt}")


# A run on the LIF baseline (no sign blocks) with a weight average.
EMA = ("experiment=yesno_lif", "trainer.ema_decay=0.9")


def test_a_weight_average_is_what_validation_and_the_checkpoints_score(run, tmp_path, cache):
    """The best epoch's validation loss, as the run recorded it, is what ``nwtrain-eval`` measures on the
    best checkpoint: validation scored the weights the checkpoint gives every later command, the average,
    not the trained weights it also holds."""
    summary = run("a", *EMA, "trainer.epochs=2")
    best = load_checkpoint(tmp_path / "a" / "checkpoints" / "best.ckpt")
    assert best["model"].keys() == best["trained_model"].keys()
    assert any(not torch.equal(best["model"][k], best["trained_model"][k]) for k in best["trained_model"])
    cfg = compose_config(
        [
            f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'best.ckpt'}",
            f"paths.output_dir={tmp_path / 'eval'}",
            f"paths.cache_dir={cache}",
            "split=val",
        ],
        config_name="eval",
    )
    measured = evaluate_checkpoint(cfg)
    record = read_jsonl(tmp_path / "a" / "metrics.jsonl")[summary["best_epoch"] - 1]
    assert measured["acc"] == summary["best_val_acc"] == record["accuracy/val"]
    assert measured["loss"] == pytest.approx(record["loss/val_cross_entropy"], rel=1e-6)
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["splits"]["val"]["loss"] == measured["loss"]


def test_a_resumed_weight_average_matches_an_uninterrupted_run(run, tmp_path):
    straight = run("straight", *EMA, "trainer.epochs=3")
    run("first", *EMA, "trainer.epochs=1")
    resumed = run(
        "resumed", *EMA, "trainer.epochs=3", f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"
    )
    assert deterministic(read_jsonl(tmp_path / "resumed" / "metrics.jsonl")) == deterministic(
        read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    )
    for key in ("best_val_acc", "best_epoch", "test_acc", "test_confusion"):
        assert resumed[key] == straight[key]
    a, b = (load_checkpoint(tmp_path / n / "checkpoints" / "last.ckpt") for n in ("straight", "resumed"))
    for part in ("model", "trained_model"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])


def test_resume_refuses_a_changed_weight_average_decay(run, tmp_path):
    run("first", *EMA)
    with pytest.raises(ConfigError, match=r"trainer\.ema_decay: 0\.9 -> 0\.99"):
        run(
            "other",
            *EMA,
            "trainer.ema_decay=0.99",
            f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}",
        )


def test_early_stopping_after_patience_epochs_without_gain(run):
    # With (almost) frozen weights the val accuracy cannot improve after the first epoch.
    summary = run(
        "es",
        "trainer.epochs=5",
        "trainer.early_stopping_patience=1",
        "optim.lr_core=1e-12",
        "optim.lr_frontend=0",
    )
    assert summary["status"] == "early_stopped" and summary["epochs_completed"] == 2


def test_sign_annealing_leaves_every_block_sign_uniform(run, tmp_path):
    run("sa", "experiment=yesno_h1v2_hw", "trainer.epochs=2")
    history = read_jsonl(tmp_path / "sa" / "metrics.jsonl")
    assert history[-1]["hardware/sign_hardness"] == 1.0
    assert [r["hardware/sign_violations"] for r in history] == [0, 0]


def test_a_checkpoint_with_plain_weights_evaluates_but_resumes_only_unannealed(run, tmp_path, cache):
    # What a hardware-aware run wrote before SignAnnealing was a parametrisation: plain weight keys.
    summary = run("old", "experiment=yesno_h1v1_hw", "variant.sign_annealing=null")
    ckpt = tmp_path / "old" / "checkpoints" / "best.ckpt"
    assert "syn_out.weight" in load_checkpoint(ckpt)["model"]
    cfg = compose_config(
        [f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'eval'}", f"paths.cache_dir={cache}"],
        config_name="eval",
    )
    assert evaluate_checkpoint(cfg)["acc"] == summary["test_acc"]
    # Resuming it as an annealing run would change its training: refused, naming the setting.
    with pytest.raises(ConfigError, match=r"honour \(variant\.sign_annealing\._partial_: None -> True"):
        run("resumed", "experiment=yesno_h1v1_hw", "trainer.epochs=2", f"ckpt_path={ckpt}")
    resumed = run(
        "resumed",
        "experiment=yesno_h1v1_hw",
        "variant.sign_annealing=null",
        "trainer.epochs=2",
        f"ckpt_path={ckpt}",
    )
    assert resumed["epochs_completed"] == 2


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_one_epoch(run, experiment):
    summary = run(experiment, f"experiment={experiment}")
    assert summary["experiment"] == experiment and summary["status"] == "completed"
    assert 0.0 <= summary["test_acc"] <= 1.0


def test_evaluate_checkpoint_in_process(run, tmp_path, cache):
    summary = run("a")
    cfg = compose_config(
        [
            f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'best.ckpt'}",
            f"paths.output_dir={tmp_path / 'eval'}",
            f"paths.cache_dir={cache}",
            "split=all",
        ],
        config_name="eval",
    )
    result = evaluate_checkpoint(cfg)
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result == report["splits"]["train"]
    assert report["splits"]["test"]["acc"] == summary["test_acc"]


def _job(sweep, name, overrides, summary):
    (sweep / name / ".hydra").mkdir(parents=True)
    (sweep / name / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if summary is not None:
        (sweep / name / "summary.json").write_text(json.dumps(summary))


def test_sweep_summary_pools_seeds_and_lists_failures(tmp_path):
    ok = {"status": "completed", "best_val_acc": 0.8, "last_val_acc": 0.75, "test_acc": 0.7}
    _job(tmp_path, "0", ["trainer.epochs=2", "model.hidden_size=8", "seed=1"], ok)
    _job(tmp_path, "1", ["trainer.epochs=2", "model.hidden_size=8", "seed=2"], {**ok, "best_val_acc": 0.6})
    _job(
        tmp_path,
        "2",
        ["trainer.epochs=2", "model.hidden_size=16", "seed=1"],
        {"status": "failed", "error": "x"},
    )
    _job(tmp_path, "3", ["trainer.epochs=2", "model.hidden_size=16", "seed=2"], None)
    rows = {r["setting"]: r for r in summarize_sweep(tmp_path)}
    small, large = rows["model.hidden_size=8"], rows["model.hidden_size=16"]
    assert small["completed"] == 2 and small["val_acc_mean"] == pytest.approx(0.7)
    assert small["val_acc_std"] == pytest.approx(0.1414, abs=1e-4) and small["test_acc_std"] == 0.0
    assert small["last_val_acc_mean"] == pytest.approx(0.75)
    assert large["completed"] == 0 and [f["error"] for f in large["failed"]] == ["x", "missing"]


def test_sweep_summary_pools_cross_validation_folds(tmp_path):
    for i, (fold, floor, last) in enumerate([(0, -60, 0.9), (1, -60, 0.8), (0, -40, 0.7), (1, -40, 0.6)]):
        overrides = ["data.cv_folds=2", f"data.cv_fold={fold}", f"data.compression_floor_db={floor}"]
        summary = {"status": "completed", "best_val_acc": 1.0, "last_val_acc": last, "test_acc": 0.5}
        _job(tmp_path, str(i), overrides, summary)
    rows = {r["setting"]: r for r in summarize_sweep(tmp_path)}
    assert sorted(rows) == ["data.compression_floor_db=-40", "data.compression_floor_db=-60"]
    assert rows["data.compression_floor_db=-60"]["last_val_acc_mean"] == pytest.approx(0.85)
    assert rows["data.compression_floor_db=-40"]["jobs"] == ["2", "3"]


def test_sweep_table_ranks_settings_shortens_numbers_and_links_job_folders(tmp_path, capsys):
    for i, (lr, acc) in enumerate([("0.0012345678901", 0.6), ("0.0054321", 0.9), ("0.0099", None)]):
        summary = {"status": "completed", "best_val_acc": acc, "last_val_acc": acc, "test_acc": acc}
        _job(tmp_path, f"{i}_run", [f"optim.lr_core={lr}"], summary if acc else {"status": "failed"})
    with pytest.raises(SystemExit, match="1 of 3 sweep jobs failed"):
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    rows = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert [r["setting"] for r in rows] == [
        "optim.lr_core=0.0054321",
        "optim.lr_core=0.0012345678901",
        "optim.lr_core=0.0099",
    ]
    out = capsys.readouterr().out
    assert "optim.lr_core=0.00543" in out and "optim.lr_core=0.00123 " in out and "1_run" in out
    assert "90.0%" in out and "±" not in out.split("best setting first")[0]  # one job: no ± 0.0
