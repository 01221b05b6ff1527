"""The Hydra configs and the `nwtrain` / `nwtrain-eval` commands: every experiment and group option
composes and instantiates; a 1-epoch run, eval and multiruns through the real CLI in subprocesses."""

import json
import re
from pathlib import Path

import pytest
import torch
from cli_helpers import CONF_DIR, compose_config, read_jsonl, run_cli, tiny_cache, tiny_overrides
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nwtrain.chips import CHIPS, h1v1, h1v2
from nwtrain.chips.placement import place
from nwtrain.config import validate_config
from nwtrain.errors import ConfigError
from nwtrain.models.kws import layer_names
from nwtrain.runs import build_data

CHIP_NAMES = sorted(p.stem for p in (CONF_DIR / "chip").glob("*.yaml"))
VARIANTS = sorted(p.stem for p in (CONF_DIR / "variant").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
# Experiments are tasks (chip and variant on the command line) and names that fix both, <task>_<chip>[_<tag>].
NAMED = re.compile(rf"^(?P<task>\w+?)_(?P<chip>{'|'.join(CHIP_NAMES)})(_(?P<tag>[a-z]+))?$")
TASKS = [e for e in EXPERIMENTS if not NAMED.match(e)]
NAMES = [e for e in EXPERIMENTS if NAMED.match(e)]
# Tutorial 4 on the embedded corpus; the real-speech experiments (the accuracy recipe) are the rest.
TUTORIAL4 = [e for e in NAMES if NAMED.match(e)["task"] == "yesno"]
REAL_TASKS = ("yesno_sc", "words_sc", "digits_fsdd")
REAL_SPEECH = [e for e in NAMES if NAMED.match(e)["task"] in REAL_TASKS]
SC_WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
GROUPS = ("chip", "variant", "model", "quant", "init", "data", "loss", "optim", "trainer", "logger", "paths")
GROUP_OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]


def variant_of(tag: str) -> str:
    """The variant an experiment name's tag stands for."""
    return next(v for v in VARIANTS if compose_config([f"variant={v}"]).variant.tag == tag)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory)


def test_the_tasks_are_the_documented_ones():
    assert TASKS == sorted(["digits_embedded", "digits_fsdd", "pattern", "words_sc", "yesno", "yesno_sc"])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chip", CHIP_NAMES)
@pytest.mark.parametrize("task", TASKS)
def test_every_task_composes_on_every_chip_and_variant(task, chip, variant):
    """``experiment=<task> chip=<chip> variant=<variant>``: a chip network fits its chip's cores, a
    deployable one must (its budget is checked), and the LIF baseline refuses the deployable variants by
    name."""
    cfg = compose_config([f"experiment={task}", f"chip={chip}", f"variant={variant}", "paths.output_dir=x"])
    assert (cfg.model.chip, cfg.variant.name) == (chip, variant)
    assert cfg.experiment_name == f"{task}_{chip}_{cfg.variant.tag}"
    if chip == "lif" and cfg.variant.deployable:
        with pytest.raises(ConfigError, match=r"^variant\.\w+: "):
            validate_config(cfg)
        return
    validate_config(cfg)
    assert_fits(cfg)


@pytest.mark.parametrize("name", NAMES)
def test_every_experiment_name_is_its_task_on_its_chip_and_variant(name):
    """The names the README and earlier releases use (``yesno_h1v1_mismatch``) are the task with chip and
    variant set, nothing more."""
    parts = NAMED.match(name)
    named = compose_config([f"experiment={name}", "paths.output_dir=x"])
    variant = variant_of(parts["tag"]) if parts["tag"] else named.variant.name  # untagged: its own
    chosen = compose_config(
        [
            f"experiment={parts['task']}",
            f"chip={parts['chip']}",
            f"variant={variant}",
            "paths.output_dir=x",
        ]
    )
    assert named.experiment_name == name
    named.experiment_name = chosen.experiment_name
    assert named == chosen


@pytest.mark.parametrize("experiment", TUTORIAL4)
def test_every_experiment_composes_with_tutorial4_hyperparameters(experiment):
    cfg = compose_config([f"experiment={experiment}", "paths.output_dir=unused"])
    validate_config(cfg)
    assert cfg.experiment_name == experiment
    assert list(cfg.data.words) == ["yes", "no"]
    assert (cfg.trainer.epochs, cfg.trainer.grad_clip) == (75, 0.5)
    assert (cfg.optim.lr_frontend, cfg.optim.lr_core) == (1e-5, 1e-3)
    assert (cfg.loss.lam_fr, cfg.loss.target_fr) == (10.0, 0.15)
    loader = cfg.data.dataloader_config
    assert (loader.batch_size, loader.val_split, loader.random_state) == (16, 0.15, 123)
    model = cfg.model
    assert (model.hidden_size, list(model.taus), model.dt) == (64, [10e-3, 64e-3, 64e-3], 8e-3)
    assert model.surrogate.slope == 25.0
    assert cfg.loss.limit == {"h1v1": 0.9, "h1v2": 1.66, "lif": 1.0}[model.chip]


@pytest.mark.parametrize(
    ("experiment", "bits", "lam_topology", "stddev", "ileak"),
    [
        ("yesno_h1v1_plain", None, 0.0, 0.0, False),
        ("yesno_h1v1_hw", 5, 0.05, 0.0, False),
        ("yesno_h1v1_mismatch", 5, 0.05, 0.02, True),
        ("yesno_h1v2_mismatch", 5, 0.05, 0.0, True),  # H1v2 has no synaptic mismatch model
        ("yesno_lif", None, 0.0, 0.0, False),
    ],
)
def test_variants_match_tutorial4(experiment, bits, lam_topology, stddev, ileak):
    cfg = compose_config([f"experiment={experiment}"])
    assert cfg.model.quantization_bit == bits
    assert cfg.loss.lam_topology == lam_topology
    assert (cfg.model.stddev, cfg.model.ileak_mismatch) == (stddev, ileak)


@pytest.mark.parametrize(
    ("experiment", "margin", "stddev"),
    [("yesno_h1v1_mismatch", 1.5, 0.03), ("yesno_h1v1_mismatch", 0, 0.0), ("yesno_h1v2_mismatch", 2, 0.0)],
)
def test_the_mismatch_margin_scales_the_chips_synaptic_stddev(experiment, margin, stddev):
    cfg = compose_config([f"experiment={experiment}", f"variant.stddev_margin={margin}"])
    assert cfg.model.stddev == pytest.approx(stddev)
    assert cfg.model.ileak_mismatch


@pytest.mark.parametrize("experiment", REAL_SPEECH)
def test_real_speech_experiments_compose_with_the_accuracy_recipe(experiment):
    cfg = compose_config([f"experiment={experiment}", "paths.output_dir=unused"])
    validate_config(cfg)
    assert cfg.experiment_name == experiment
    task, chip_name, variant = _parts(experiment)
    assert cfg.model.chip == chip_name and cfg.data.compression == "log"
    speech_commands = task != "digits_fsdd"
    assert cfg.data.layout == ("speech_commands" if speech_commands else "folder")
    assert cfg.data.data_parent.endswith("speech_commands" if speech_commands else "fsdd")
    if speech_commands:
        assert list(cfg.data.words) == (["yes", "no"] if task == "yesno_sc" else SC_WORDS)
    deployable = variant in ("hw", "mismatch")
    # A chip network fills the chip's neurons (docs/chip_model.md, "Core map and budget"); ten classes take
    # five output neurons each there. The LIF baseline has no budget.
    classes = 2 if task == "yesno_sc" else 10
    # The ten words on a chip use in-core recurrence (docs/accuracy.md, "In-core recurrence on the chips"):
    # on H1v1 the recurrent hidden layer holds three whole cores and the output population the fourth; on
    # H1v2 the hidden layer fills the two 50-neuron cores and half of the 100-neuron one. H1v2's yes / no
    # hidden layer is recurrent too, at the feed-forward width (180: 80 of the 100-neuron core). The LIF
    # baseline's ten-word layer is recurrent all to all; it and H1v2's ten words and yes / no train on
    # speed-perturbed copies too, the ten words for 40 epochs (docs/accuracy.md, "Speed perturbation").
    recurrent = task == "words_sc" or (task == "yesno_sc" and chip_name == "h1v2")
    assert cfg.model.recurrent == recurrent
    lif_words = task == "words_sc" and chip_name == "lif"
    copies = (task == "words_sc" and chip_name in ("lif", "h1v2")) or (
        task == "yesno_sc" and chip_name == "h1v2"
    )
    assert list(cfg.data.train_speed_factors) == ([0.9, 1.1] if copies else [])
    assert cfg.trainer.epochs == (40 if copies and task == "words_sc" else 60)
    if recurrent and task == "words_sc" and not lif_words:
        assert (cfg.model.hidden_size, cfg.model.out_population) == {"h1v1": (192, 6), "h1v2": (150, 5)}[
            chip_name
        ]
    else:
        population = 10 if chip_name == "lif" or classes == 2 else 5
        width = 256 if chip_name == "lif" else CHIPS[chip_name].n_neurons - classes * population
        assert (cfg.model.hidden_size, cfg.model.out_population) == (width, population)
    # Delays are the LIF baseline's (docs/accuracy.md, "Delays for the LIF baseline"); the chips have none.
    delays = (11 if task == "digits_fsdd" else 6) if chip_name == "lif" else 0
    assert len(cfg.model.frontend_delays_s) == delays
    # So is a denser filterbank (docs/accuracy.md, "A denser filterbank for the LIF baseline").
    assert cfg.data.bands_per_octave == (6 if chip_name == "lif" else 2)
    # And silence after the Speech Commands clips (docs/accuracy.md, "Silence after the clip ...").
    assert cfg.data.recording_duration_s == (1.2 if chip_name == "lif" and speech_commands else 1.0)
    # The chips' yes / no networks and H1v2's FSDD network are simulated at 4 ms (docs/accuracy.md,
    # "The simulation step on H1v1" and "... on H1v2").
    fine_step = (task == "yesno_sc" and chip_name != "lif") or (task == "digits_fsdd" and chip_name == "h1v2")
    assert cfg.model.dt == (4.0e-3 if fine_step else 8.0e-3)
    # The block signs are exact for the last 10 epochs on H1v2, and on H1v1 at that 4 ms step
    # (docs/accuracy.md, "Hardening before the end"); the other chip networks harden at the end.
    hard = chip_name == "h1v2" or (task == "yesno_sc" and chip_name == "h1v1")
    assert cfg.trainer.hard_sign_epochs == (10 if hard else 0)
    assert cfg.optim.scheduler.total_epochs == cfg.trainer.epochs
    assert cfg.model.quantization_bit == (5 if deployable else None)
    assert (cfg.variant.sign_annealing is not None) == deployable
    assert cfg.model.ileak_mismatch == (variant == "mismatch")


def test_h1v2_embedded_digits_take_fsdd_sizes_at_the_tutorial_step():
    """The embedded corpus's digits on H1v2 take FSDD's sizes and signs schedule, but not its 4 ms step,
    which was chosen on FSDD's unheard speakers only (conf/tuning/digits_embedded/h1v2.yaml)."""
    fsdd, embedded = (
        compose_config([f"experiment={t}", "chip=h1v2", "paths.output_dir=x"])
        for t in ("digits_fsdd", "digits_embedded")
    )
    assert (fsdd.model.dt, embedded.model.dt) == (4.0e-3, 8.0e-3)
    sizes = [
        (c.model.hidden_size, c.model.out_population, c.trainer.hard_sign_epochs) for c in (fsdd, embedded)
    ]
    assert sizes == [(150, 5, 10)] * 2


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_the_variant_decides_deployability(experiment, variant):
    """SignAnnealing is on exactly for the hardware- and mismatch-aware variants, whatever the experiment
    (its defaults included); the LIF baseline, which has no sign blocks, refuses them by name."""
    cfg = compose_config([f"experiment={experiment}", f"variant={variant}", "paths.output_dir=unused"])
    deployable = variant in ("hardware_aware", "mismatch_aware")
    assert cfg.variant.name == variant
    if cfg.model.chip == "lif" and deployable:
        with pytest.raises(ConfigError, match=r"^variant\.\w+: "):
            validate_config(cfg)
        return
    validate_config(cfg)
    annealing = cfg.variant.sign_annealing
    assert (annealing is not None) == deployable
    if deployable:
        assert annealing._target_ == "nwtrain.optim.SignAnnealing"
        # The schedule spans trainer.anneal_epochs, all the epochs unless the experiment hardens earlier.
        assert (annealing.total_epochs, annealing.alpha_start, annealing.alpha_end) == (
            cfg.trainer.anneal_epochs,
            0.5,
            20.0,
        )
        assert annealing.total_epochs <= cfg.trainer.epochs
    assert "sign_annealing" not in cfg.optim


def _parts(experiment: str) -> tuple[str, str, str]:
    """``(task, chip, variant tag)`` of an experiment name (the LIF baseline's variant: plain)."""
    parts = NAMED.match(experiment)
    return parts["task"], parts["chip"], parts["tag"] or "plain"


def test_plain_nwtrain_is_the_mismatch_aware_h1v1_experiment():
    assert compose_config([]) == compose_config(["experiment=yesno_h1v1_mismatch"])


def test_chip_configs_mirror_the_chip_specs():
    """Each conf/chip file is its ChipSpec's, and names it: adding a chip is a module and a conf file."""
    assert sorted(p.stem for p in (CONF_DIR / "chip").glob("*.yaml")) == sorted(CHIPS)
    for name, spec in CHIPS.items():
        conf = OmegaConf.load(CONF_DIR / "chip" / f"{name}.yaml")
        assert conf.name == name
        assert (conf.weight_limit, conf.syn_mismatch_stddev) == (spec.weight_limit, spec.syn_offset_stddev)
    assert (
        CHIPS["h1v1"].weight_limit == h1v1.WEIGHT_LIMIT_V
        and CHIPS["h1v2"].weight_limit == h1v2.WEIGHT_LIMIT_V
    )


def assert_fits(cfg) -> None:
    """Composed with its data's classes, the network places onto its chip's cores; a deployable variant
    insists on it."""
    classes = len(cfg.data.words) if cfg.data.words else 10  # FSDD and the patterns: ten folders at most
    sizes = [cfg.model.hidden_size] if isinstance(cfg.model.hidden_size, int) else list(cfg.model.hidden_size)
    layers = dict(zip(layer_names(len(sizes))[1:], [*sizes, classes * cfg.model.out_population]))
    placement = place(CHIPS[cfg.model.chip], layers)
    assert placement.fits, placement.message()
    assert cfg.model.fit_chip == cfg.variant.deployable


@pytest.mark.parametrize("experiment", [e for e in NAMES if NAMED.match(e)["chip"] != "lif"])
def test_every_chip_experiment_fits_its_chip(experiment):
    assert_fits(compose_config([f"experiment={experiment}", "paths.output_dir=unused"]))


def test_a_network_over_the_budget_is_refused_before_any_data_is_read(tmp_path):
    cache, data = tmp_path / "cache", tmp_path / "data"
    result = run_cli(
        [
            "experiment=digits_fsdd_h1v1_hw",
            "model.hidden_size=1024",
            f"paths.cache_dir={cache}",
            f"paths.real_data_dir={data}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "logger.progress=false",
        ],
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert (
        "model.hidden_size: H1v1 has 256 neurons in 4 cores of 64; this model needs 1024 (hidden 1024) "
        "before its output population; variant=hardware_aware must deploy" in result.stderr + result.stdout
    )
    assert not cache.exists() and not data.exists()


def test_a_plain_network_over_the_budget_trains_with_a_warning(caplog):
    cfg = compose_config(
        ["experiment=yesno_sc_h1v2_plain", "model.hidden_size=256", "paths.output_dir=unused"]
    )
    validate_config(cfg)
    assert (
        "H1v2 has 200 neurons in 3 cores of 50, 50 and 100; this model needs 276 (hidden 256, out 20): "
        "variant=plain trains it, but it will not deploy" in caplog.text
    )
    with pytest.raises(ConfigError, match=r"^model\.hidden_size: H1v2 has 200 neurons .* needs 276"):
        validate_config(
            compose_config(["experiment=yesno_sc_h1v2_hw", "model.hidden_size=256", "paths.output_dir=u"])
        )


@pytest.fixture
def data_overrides(cache, mini_speech_commands, speaker_tree):
    """What each data option needs to find its (tiny) data."""
    return {
        "embedded": tiny_overrides(cache),
        "speech_commands": [f"paths.cache_dir={cache}", f"paths.speech_commands_dir={mini_speech_commands}"],
        "folder": [f"paths.cache_dir={cache}", f"data.data_parent={speaker_tree}"],
        "sc_excerpt": [f"paths.cache_dir={cache}", f"data.data_parent={mini_speech_commands}"],
        "fsdd": [f"paths.cache_dir={cache}", f"data.data_parent={speaker_tree}"],
        "patterns": [f"paths.cache_dir={cache}", "data.data_parent.n_clips=8"],
    }


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_group_option_instantiates(group, option, data_overrides):
    # The LIF baseline has no mismatch model, so it pairs with a mismatch-free variant.
    # So does a QAT scheme other than the chip's grid.
    extra = ["variant=plain"] if option == "lif" or (group == "quant" and option != "chip") else []
    if option in ("kws_speech_delays", "kws_speech_wide"):  # no synaptic delays, nor 1024 neurons, on a chip
        extra = ["chip=lif", "variant=plain"]
    overrides = data_overrides["embedded"] if group != "data" else data_overrides[option]
    cfg = compose_config([*overrides, f"{group}={option}", *extra, "paths.output_dir=unused"])
    validate_config(cfg)
    model = instantiate(cfg.model, n_channels=13, n_classes=2, device="cpu")
    if cfg.get("init"):  # on a batch of features, before SignAnnealing parametrises the weights, as in train
        x = 0.1 * torch.rand(4, 125, 13, generator=torch.Generator().manual_seed(0))
        instantiate(cfg.init)(model, x, generator=torch.Generator().manual_seed(0))
    if cfg.variant.sign_annealing:
        instantiate(cfg.variant.sign_annealing)(model)
    optimizer = instantiate(cfg.optim.optimizer)(model.param_groups(cfg.optim.lr_frontend, cfg.optim.lr_core))
    assert isinstance(optimizer, torch.optim.Adam)
    if cfg.optim.scheduler:
        instantiate(cfg.optim.scheduler)(optimizer).set_epoch(1)
    assert instantiate(cfg.loss.objective).metric in ("acc", "r2")
    if group == "data":
        data = build_data(cfg.data)
        x, y = next(iter(data.loaders["train"]))
        assert x.shape[1:] == (125, data.n_channels)
        if cfg.data.task == "regression":  # a rate target per step and output channel
            assert y.dtype == torch.float32 and y.shape[1:] == (125, len(data.classes))
        else:
            assert y.dtype == torch.int64


@pytest.mark.parametrize(
    ("override", "key", "plugin", "target"),
    [
        ("hparams_search=optuna", "sweeper", "hydra_optuna_sweeper", "optuna_sweeper.OptunaSweeper"),
        ("hydra/launcher=local", "launcher", "hydra_joblib_launcher", "joblib_launcher.JoblibLauncher"),
        ("hydra/launcher=slurm", "launcher", "hydra_submitit_launcher", "submitit_launcher.SlurmLauncher"),
    ],
)
def test_sweeper_and_launcher_options_compose(override, key, plugin, target):
    pytest.importorskip(f"hydra_plugins.{plugin}")
    cfg = compose_config([override], return_hydra_config=True)
    assert cfg.hydra[key]._target_ == f"hydra_plugins.{plugin}.{target}"


# ---------------------------------------------------------------------------------------------------------
# The commands
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_run(cache, tmp_path_factory):
    """`nwtrain experiment=yesno_h1v1_mismatch trainer.epochs=1` (on the tiny corpus) in a subprocess."""
    root = tmp_path_factory.mktemp("cli")
    run_dir = root / "run"
    proc = run_cli(
        ["experiment=yesno_h1v1_mismatch", *tiny_overrides(cache), f"hydra.run.dir={run_dir}"], root
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run_dir, proc


def test_cli_one_epoch_leaves_a_complete_run_folder(cli_run):
    run_dir, proc = cli_run
    for name in (
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "metrics.jsonl",
        "summary.json",
        "train.log",
        ".hydra/config.yaml",
        "plots/training_curves.png",
        "plots/spike_raster.png",
        "plots/weight_signs.png",
    ):
        assert (run_dir / name).is_file(), name
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and 0 <= summary["test_acc"] <= 1
    assert "best val accuracy" in proc.stdout  # the closing table


def test_cli_writes_tensorboard_scalars_and_histograms(cli_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = cli_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in (
        "loss/total",
        "loss/cross_entropy",
        "loss/topology",
        "loss/weight_magnitude",
        "loss/firing_rate",
        "accuracy/train",
        "accuracy/val",
        "accuracy/test",
        "firing_rate/frontend",
        "firing_rate/hidden",
        "firing_rate/out",
        "lr/frontend",
        "lr/core",
        "hardware/sign_violations",
    ):
        assert tag in scalars, tag
    assert {"weights/syn_hidden.weight", "weights/frontend.weight"} <= set(events.Tags()["histograms"])


def test_eval_reproduces_the_runs_test_accuracy(cli_run, cache, tmp_path):
    run_dir, _ = cli_run
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    proc = run_cli(
        [f"ckpt_path={ckpt}", f"paths.cache_dir={cache}", f"hydra.run.dir={tmp_path / 'eval'}"],
        tmp_path,
        entry="eval_main",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["splits"]["test"]["acc"] == json.loads((run_dir / "summary.json").read_text())["test_acc"]


def test_eval_on_another_data_config(cli_run, cache, mini_speech_commands, tmp_path):
    run_dir, _ = cli_run
    proc = run_cli(
        [
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            "data=speech_commands",
            f"paths.speech_commands_dir={mini_speech_commands}",
            f"paths.cache_dir={cache}",
            "data.progress=false",
            "split=all",
            "mismatch.instances=3",
            f"hydra.run.dir={tmp_path / 'eval'}",
        ],
        tmp_path,
        entry="eval_main",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert set(report["splits"]) == {"train", "val", "test"}
    test = report["splits"]["test"]
    assert test["samples"] == 6  # mini tree: 3 takes x yes/no of speaker 2
    chips = test["mismatch"]
    assert len(chips["accs"]) == 3 and chips["mean"] == pytest.approx(sum(chips["accs"]) / 3)
    assert 0.0 <= chips["yield"] <= 1.0 and (tmp_path / "eval" / "mismatch_test.png").is_file()


def _sweep_rows(sweep_dir: Path) -> list[dict]:
    return json.loads((sweep_dir / "sweep_summary.json").read_text())


def test_multirun_over_two_seeds_reports_mean_and_std(cache, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            "experiment=yesno_h1v1_hw",
            "seed=1,2",
            *tiny_overrides(cache),
            "logger=jsonl",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for job in ("0_yesno_h1v1_hw", "1_yesno_h1v1_hw"):
        assert json.loads((sweep_dir / job / "summary.json").read_text())["status"] == "completed"
        assert (sweep_dir / job / "checkpoints" / "best.ckpt").is_file()
    [row] = _sweep_rows(sweep_dir)
    assert row["setting"] == "(every job)" and row["completed"] == 2 and row["val_acc_std"] is not None
    assert "±" in proc.stdout


def test_a_failing_job_does_not_stop_the_sweep_but_fails_its_exit_status(cache, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(
        ["-m", "loss.limit=5.0,0.9", *tiny_overrides(cache), "logger=jsonl", f"hydra.sweep.dir={sweep_dir}"],
        tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"1 of 2 sweep jobs failed (see {sweep_dir / 'sweep_summary.json'})" in proc.stderr
    failed = json.loads((sweep_dir / "0_yesno_h1v1_mismatch" / "summary.json").read_text())
    assert failed["status"] == "failed" and "loss.limit" in failed["error"]
    assert (
        json.loads((sweep_dir / "1_yesno_h1v1_mismatch" / "summary.json").read_text())["status"]
        == "completed"
    )
    rows = {r["setting"]: r for r in _sweep_rows(sweep_dir)}
    assert rows["loss.limit=5.0"]["failed"] and rows["loss.limit=0.9"]["completed"] == 1


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel(cache, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            "hydra/launcher=local",
            "seed=1,2",
            "trainer.num_threads=1",
            *tiny_overrides(cache),
            "logger=jsonl",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _sweep_rows(sweep_dir)[0]["completed"] == 2


@pytest.mark.slow
def test_optuna_search_runs_trials(cache, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(
        [
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.n_startup_trials=1",
            *tiny_overrides(cache),
            f"hydra.sweep.dir={sweep_dir}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (sweep_dir / "optimization_results.yaml").is_file()
    assert sum(r["completed"] for r in _sweep_rows(sweep_dir)) == 2


def test_h1v2_trains_its_last_ten_epochs_with_exact_signs():
    """H1v2's speech tasks harden the block signs ten epochs before the end (conf/tuning/*/h1v2.yaml), and of
    H1v1's only yes / no, at its 4 ms step; the hardening epoch follows a changed epoch count, and a negative
    count is refused by name."""
    for task in REAL_TASKS:
        cfg = compose_config(
            [f"experiment={task}", "chip=h1v2", "variant=hardware_aware", "paths.output_dir=x"]
        )
        epochs = 40 if task == "words_sc" else 60  # the ten words train on speed copies too
        assert (cfg.trainer.epochs, cfg.variant.sign_annealing.total_epochs) == (epochs, epochs - 10)
        h1v1 = compose_config(
            [f"experiment={task}", "chip=h1v1", "variant=hardware_aware", "paths.output_dir=x"]
        )
        assert h1v1.variant.sign_annealing.total_epochs == (50 if task == "yesno_sc" else 60)
    short = compose_config(["experiment=words_sc_h1v2_hw", "trainer.epochs=30", "paths.output_dir=x"])
    assert short.trainer.anneal_epochs == 20
    bad = compose_config(["experiment=words_sc_h1v2_hw", "trainer.hard_sign_epochs=-1", "paths.output_dir=x"])
    with pytest.raises(ConfigError, match=r"^trainer\.hard_sign_epochs: "):
        validate_config(bad)
