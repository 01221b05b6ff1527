"""Checks that run before any data is loaded or any epoch starts, each failing with the field it blames.

A value usually reaches the model through an interpolation (``model.quantization_bit:
${variant.quantization_bit}``); errors name the field the value was set in, the one a user overrides.
"""

from __future__ import annotations

import logging
import math
import os
import re
import uuid
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nwtrain.chips import CHIPS, ChipSpec, DesignRuleError
from nwtrain.chips.placement import place
from nwtrain.core.layers import delay_steps, resolve_device
from nwtrain.errors import ConfigError, DataError, OutputDirError
from nwtrain.models.kws import layer_names

log = logging.getLogger(__name__)

# conf/ next to the package (a checkout or an editable install), or NWTRAIN_CONFIG_DIR's copy. Its parent is
# the project root: defaults such as paths.real_data_dir are relative to it, not to where a command starts.
CONFIG_DIR = Path(os.environ.get("NWTRAIN_CONFIG_DIR") or Path(__file__).resolve().parents[1] / "conf")
PROJECT_ROOT = CONFIG_DIR.parent
OmegaConf.register_new_resolver("nwtrain.project_root", lambda: str(PROJECT_ROOT), replace=True)
# trainer.anneal_epochs from trainer.epochs and trainer.hard_sign_epochs: the signs harden that many epochs
# before the end, and at the first epoch at the latest.
OmegaConf.register_new_resolver(
    "nwtrain.anneal_epochs", lambda epochs, hard: max(int(epochs) - int(hard), 1), replace=True
)
# variant.stddev: the chip's measured synaptic stddev times the variant's training margin over it.
OmegaConf.register_new_resolver("nwtrain.mul", lambda a, b: float(a) * float(b), replace=True)
REAL_DATA_ENV = "NWTRAIN_REAL_DATA"

_PLAIN_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")
# Within 1 ppm of the chip's range counts as the range: YAML and CLI floats need not be bit-exact.
_LIMIT_TOLERANCE = 1e-6
# The config field each design rule's option is set in (``ChipSpec.check``).
_RULE_FIELDS = {
    "stddev": "model.stddev",
    "ileak_mismatch": "model.ileak_mismatch",
    "clamp_grad": "model.clamp_grad",
    "frontend_delays_s": "model.frontend_delays_s",
    "adaptation_taus_s": "model.adaptation_taus_s",
    "bands_per_octave": "data.bands_per_octave",
    "sign_annealing": "variant.sign_annealing",
}


def origin(cfg: DictConfig, key: str) -> str:
    """The field ``key``'s value comes from, following plain ``${a.b}`` interpolations."""
    seen = {key}
    while True:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or leaf not in node:
            return key
        match = _PLAIN_INTERPOLATION.fullmatch(str(node._get_node(leaf)._value()))
        if match is None or match.group(1) in seen:
            return key
        key = match.group(1)
        seen.add(key)


def _get(cfg: DictConfig, key: str):
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except OmegaConfBaseException as e:
        raise ConfigError(origin(cfg, key), str(e).splitlines()[0]) from None


def _number(cfg, key, *, low=None, high=None, low_open=False, high_open=False, optional=False, integer=False):
    value = _get(cfg, key)
    if value is None and optional:
        return None
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise ConfigError(origin(cfg, key), f"must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(origin(cfg, key), f"must be finite, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        above = f"{'>' if low_open else '>='} {low}"
        bounds = above if high is None else f"{above} and < {high}" if high_open else f"in {low}..{high}"
        raise ConfigError(origin(cfg, key), f"{value!r} is out of range: must be {bounds}")
    return value


def _numbers(cfg, key, **bounds) -> int:
    """``key`` is one number or a non-empty list of them, each checked as ``_number`` does; returns how
    many there are."""
    value = _get(cfg, key)
    if not isinstance(value, ListConfig):
        _number(cfg, key, **bounds)
        return 1
    if len(value) == 0:
        raise ConfigError(origin(cfg, key), "is an empty list: give at least one value")
    for i in range(len(value)):
        _number(cfg, f"{key}.{i}", **bounds)
    return len(value)


def _check_delays(cfg: DictConfig, dt: float) -> None:
    """``model.frontend_delays_s``: absent or empty, or a list of multiples of ``dt`` >= 0 (whether the chip
    has delays is a design rule)."""
    key = "model.frontend_delays_s"
    delays = _get(cfg, key)
    if delays is None or (isinstance(delays, ListConfig) and len(delays) == 0):
        return
    if not isinstance(delays, ListConfig):
        raise ConfigError(origin(cfg, key), f"must be a list of delays in s, got {delays!r}")
    for i in range(len(delays)):
        try:
            delay_steps(_number(cfg, f"{key}.{i}", low=0), dt)
        except ValueError as e:
            raise ConfigError(origin(cfg, f"{key}.{i}"), f"{e} (model.dt)") from None


def validate_config(cfg: DictConfig) -> None:
    """Reject configs that cannot train, naming the field; see the module docstring."""
    chip = _get(cfg, "model.chip")
    if chip not in CHIPS:
        raise ConfigError(
            origin(cfg, "model.chip"), f"unknown chip {chip!r}; choose one of {', '.join(CHIPS)}"
        )
    spec = CHIPS[chip]

    dt = _number(cfg, "model.dt", low=0, low_open=True)
    n_hidden = _numbers(cfg, "model.hidden_size", low=1, integer=True)
    names = layer_names(n_hidden)
    taus = _get(cfg, "model.taus")
    if taus is None or len(taus) != len(names):
        raise ConfigError(
            origin(cfg, "model.taus"),
            f"needs {len(names)} entries, one per layer ({', '.join(names)}), got {taus}",
        )
    for i in range(len(names)):
        _numbers(cfg, f"model.taus.{i}", low=0, low_open=True)
    _number(cfg, "model.out_population", low=1, integer=True, optional=True)
    _number(cfg, "model.clamp_grad", low=0, high=1, optional=True)
    _check_delays(cfg, dt)
    if _get(cfg, "model.adaptation_taus_s") is not None:
        _numbers(cfg, "model.adaptation_taus_s", low=0, low_open=True)
    _number(cfg, "data.bands_per_octave", low=1, integer=True, optional=True)
    _number(cfg, "model.input_gain", low=0, low_open=True)
    _number(cfg, "model.dense_init_bound", low=0, low_open=True, optional=True)
    _number(cfg, "model.frontend_gain", optional=True)
    _number(cfg, "model.quantization_bit", low=1, high=16, integer=True, optional=True)
    _check_quantisation(cfg)
    _number(cfg, "variant.stddev_margin", low=0, optional=True)
    _number(cfg, "model.stddev", low=0)
    _check_design_rules(cfg, spec)
    _check_budget(cfg, spec, names)

    limit = _number(cfg, "loss.limit", low=0, low_open=True)
    if limit > spec.weight_limit * (1 + _LIMIT_TOLERANCE):
        raise ConfigError(
            origin(cfg, "loss.limit"), f"{limit} is beyond the {chip} weight range +-{spec.weight_limit}"
        )
    _number(cfg, "loss.lam_topology", low=0)
    _number(cfg, "loss.lam_fr", low=0)
    _number(cfg, "loss.target_fr", low=0, high=1)
    _number(cfg, "loss.objective.label_smoothing", low=0, high=1, high_open=True, optional=True)
    unknown = [name for name in _get(cfg, "loss.fr_layers") if name not in names]
    if unknown:
        raise ConfigError("loss.fr_layers", f"unknown layers {unknown}; choose from {list(names)}")

    _number(cfg, "optim.lr_frontend", low=0)
    _number(cfg, "optim.lr_core", low=0, low_open=True)
    _check_trainer(cfg)
    _check_weight_average(cfg, spec)
    if not _get(cfg, "paths.output_dir"):
        raise ConfigError("paths.output_dir", "is not set: outside a Hydra run, set it to the run folder")

    validate_data_config(cfg)


def _check_trainer(cfg: DictConfig) -> None:
    _number(cfg, "trainer.epochs", low=1, integer=True)
    _number(cfg, "trainer.hard_sign_epochs", low=0, integer=True, optional=True)
    _number(cfg, "trainer.seed", low=0, integer=True)
    _number(cfg, "trainer.grad_clip", low=0, low_open=True, optional=True)
    _number(cfg, "trainer.early_stopping_patience", low=1, integer=True, optional=True)
    _number(cfg, "trainer.limit_train_batches", low=1, integer=True, optional=True)
    _number(cfg, "trainer.limit_eval_batches", low=1, integer=True, optional=True)
    _number(cfg, "trainer.num_threads", low=1, integer=True, optional=True)
    trainer_device(cfg)


def _check_weight_average(cfg: DictConfig, spec: ChipSpec) -> None:
    """``trainer.ema_decay`` in (0, 1), and not on a chip whose blocks of weights share a sign: the average
    of weights whose signs moved during training can mix them."""
    key = "trainer.ema_decay"
    decay = _number(cfg, key, low=0, low_open=True, high=1, optional=True)
    if decay is None:
        return
    if decay == 1:
        raise ConfigError(
            origin(cfg, key), "1 is out of range: a decay of 1 keeps the initial weights; must be < 1"
        )
    if spec.sign_blocks:
        raise ConfigError(
            origin(cfg, key),
            f"{decay}: {spec.label}'s weights share a sign in blocks, and an average of weights whose signs "
            f"moved can mix them; use null on {spec.label}",
        )


def _check_quantisation(cfg: DictConfig) -> None:
    """A deployable variant programs the chip's own grid: another QAT scheme (``quant=``) is for
    variant=plain."""
    scheme = cfg.get("quant", {}).get("name", "chip")
    if scheme != "chip" and _get(cfg, "variant.deployable"):
        raise ConfigError(
            "quant",
            f"quant={scheme} with variant={_get(cfg, 'variant.name')}: the deployable variants train on the "
            f"chip's weight grid (quant=chip); use variant=plain for quant={scheme}",
        )


def _check_design_rules(cfg: DictConfig, spec: ChipSpec) -> None:
    """Every option the chip does not have (``ChipSpec.check``), blamed on the field it was set in."""
    try:
        spec.check(**{option: _get(cfg, key) for option, key in _RULE_FIELDS.items()})
    except DesignRuleError as e:
        key = origin(cfg, _RULE_FIELDS[e.option])
        if e.option == "sign_annealing":
            raise ConfigError(
                key, f"variant={_get(cfg, 'variant.name')} anneals sign blocks: {e.reason}; use variant=plain"
            ) from None
        value = list(e.value) if isinstance(e.value, ListConfig) else e.value
        raise ConfigError(key, f"{value}: {e.reason}") from None


def _check_budget(cfg: DictConfig, spec: ChipSpec, names: tuple[str, ...]) -> None:
    """The hidden layers and the output population on the chip's cores (``nwtrain.chips.placement``): a
    deployable variant (``variant.deployable``) must fit, a plain one is warned that it will not deploy.
    The output counts when ``data.words`` names the classes; otherwise they are known once the data is
    read, and the model's construction checks the whole network."""
    sizes = _get(cfg, "model.hidden_size")
    layers = dict(zip(names[1:-1], [sizes] if isinstance(sizes, int) else list(sizes)))
    words = _get(cfg, "data.words")
    if words:
        layers[names[-1]] = len(words) * (_get(cfg, "model.out_population") or 1)
    placement = place(spec, layers)
    if placement.fits:
        return
    message = placement.message() + ("" if words else " before its output population")
    if _get(cfg, "variant.deployable"):
        raise ConfigError(
            origin(cfg, "model.hidden_size"),
            f"{message}; variant={_get(cfg, 'variant.name')} must deploy, so the network must fit",
        )
    log.warning("%s: variant=%s trains it, but it will not deploy", message, _get(cfg, "variant.name"))


def validate_data_config(cfg: DictConfig) -> None:
    if _get(cfg, "data.data_parent") is None:
        raise ConfigError(
            "data.data_parent",
            "is not set: give the folder of <class>/*.wav, e.g. data=folder data.data_parent=/path/to/tree",
        )
    words = _get(cfg, "data.words")
    not_words = [w for w in words or () if not isinstance(w, str)]
    if not_words:
        raise ConfigError(
            origin(cfg, "data.words"),
            f"{not_words} are not words: quote yes, no, on and off in YAML, which reads them as booleans",
        )
    _number(cfg, "data.dataloader_config.batch_size", low=1, integer=True)
    folds = _number(cfg, "data.cv_folds", low=0, integer=True, optional=True)
    if folds == 1:
        raise ConfigError(origin(cfg, "data.cv_folds"), "1 fold is no cross-validation: use 0 (off) or >= 2")
    if folds:
        _number(cfg, "data.cv_fold", low=0, high=folds - 1, integer=True)
    speeds = _get(cfg, "data.train_speed_factors")
    if speeds is not None and not isinstance(speeds, ListConfig):
        raise ConfigError(
            origin(cfg, "data.train_speed_factors"), f"must be a list of speeds, got {speeds!r}"
        )
    for i in range(len(speeds or ())):
        _number(cfg, f"data.train_speed_factors.{i}", low=0, low_open=True)
    sim_time = _number(cfg, "data.sim_time_s", low=0, low_open=True)
    if not math.isclose(sim_time, _get(cfg, "model.dt"), rel_tol=1e-9):
        raise ConfigError(
            origin(cfg, "data.sim_time_s"),
            f"{sim_time} s differs from model.dt={cfg.model.dt} s; they must agree",
        )


def check_real_data_dir(data_cfg: DictConfig) -> None:
    """A data set under ``paths.real_data_dir`` needs that folder, when the data is read; the error says
    where its value is from. ``data_cfg``: the ``data`` node of a full config (its root holds ``paths``)."""
    cfg = data_cfg._get_root()
    if "paths" not in cfg or "data_parent" not in data_cfg:
        return
    raw = data_cfg._get_node("data_parent")._value()
    if not isinstance(raw, str) or "paths.real_data_dir" not in raw:
        return
    root = Path(cfg.paths.real_data_dir)
    if root.is_dir():
        return
    env = os.environ.get(REAL_DATA_ENV)
    source = f"{REAL_DATA_ENV}={env}" if env else f"the default {PROJECT_ROOT / '..' / 'shared' / 'data'}"
    raise DataError(
        f"paths.real_data_dir: {root.resolve()} is not a folder (a command-line value, else {source}); "
        f"data.data_parent {data_cfg.data_parent} lies in it. Set paths.real_data_dir=<folder> or "
        f"{REAL_DATA_ENV} to the folder that holds speech_commands/ and fsdd/"
    )


def trainer_device(cfg: DictConfig) -> torch.device:
    """``trainer.device``: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:<i>``
    (``nwtrain.core.layers.resolve_device``); a ConfigError names the field otherwise."""
    try:
        return resolve_device(str(_get(cfg, "trainer.device")))
    except (ValueError, RuntimeError) as e:
        raise ConfigError("trainer.device", str(e)) from None


def check_words(data_parent: str | os.PathLike, words) -> None:
    """Every word of ``data.words`` must be a class folder of the data set."""
    root = Path(data_parent)
    if not root.is_dir():
        raise DataError(f"data.data_parent: {root} is not a folder")
    if not words:
        return
    available = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    missing = [w for w in words if w not in available]
    if missing:
        raise ConfigError(
            "data.words", f"{missing} not in the data set at {root} (it has: {', '.join(available)})"
        )


def check_output_dir(path: str | os.PathLike) -> Path:
    """Create the run folder and prove it takes a file, before any data is loaded or any epoch runs."""
    path = Path(path)
    probe = path / f".write-test-{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputDirError(
            f"output folder {path} is not writable ({e.strerror or e}); point hydra.run.dir (hydra.sweep.dir "
            f"with -m) or paths.output_dir elsewhere"
        ) from None
    return path
