"""Range and choice checks: each raises ConfigError with one line naming the key, its value
and what is allowed. Schemas use them in their `check()`; `validate` checks a whole Config."""

from __future__ import annotations

import math
import os
from typing import Any

from gantool.config.schema import (
    ACTIVATIONS,
    ARCHITECTURES,
    AUGMENT_POLICIES,
    AUGMENTS,
    D_FEATURES,
    DEVICES,
    G_LOSSES,
    LOGGERS,
    NOISES,
    OPTIMIZERS,
    OUT_ACTIVATIONS,
    PRECISIONS,
    Config,
)
from gantool.core.errors import ConfigError


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the first key whose value is out of range or not a choice;
    fill in trainer.objective when it is left to the dataset (null).

    What needs more than the config (a dataset's files, the list of losses) is checked one
    layer up, by gantool.datasets.registry.check."""
    ds = cfg.dataset
    ds.check()

    m = cfg.model
    choice("model.arch", m.arch, ARCHITECTURES)
    at_least("model.latent_dim", m.latent_dim, 1)
    choice("model.noise", m.noise, NOISES)
    for key, net in (("model.g", m.g), ("model.d", m.d)):
        for i, size in enumerate(net.hidden):
            at_least(f"{key}.hidden[{i}]", size, 1)
        choice(f"{key}.activation", net.activation, ACTIVATIONS)
        at_least(f"{key}.pieces", net.pieces, 1)
        positive(f"{key}.batch_norm_eps", net.batch_norm_eps)
        at_least(f"{key}.init_std", net.init_std, 0.0)
        at_least(f"{key}.negative_slope", net.negative_slope, 0.0)
        left_open_unit(f"{key}.batch_norm_momentum", net.batch_norm_momentum)
        half_open_unit(f"{key}.dropout", net.dropout)
    # A dataset may allow fewer (the user's vectors: linear only).
    allowed = getattr(ds, "g_out_activations", OUT_ACTIVATIONS)
    choice("model.g.out_activation", m.g.out_activation, allowed)
    choice("model.d.features", m.d.features, D_FEATURES)
    at_least("model.d.pack", m.d.pack, 1)
    if m.d.pack > 1 and m.d.features == "moments":
        raise ConfigError(
            f"model.d.pack={m.d.pack}: packing needs model.d.features=samples (moments "
            "already judge the whole batch)"
        )
    if m.conditional and not waits_for_data(ds):
        check_conditional(cfg)
    choice("trainer.augment", cfg.trainer.augment, AUGMENTS)
    if cfg.trainer.augment != "none":
        if not cfg.trainer.augment_policy:
            raise ConfigError(
                "trainer.augment_policy=[]: name at least one of " + ", ".join(AUGMENT_POLICIES)
            )
        for i, name in enumerate(cfg.trainer.augment_policy):
            choice(f"trainer.augment_policy[{i}]", name, AUGMENT_POLICIES)

    for key, opt in (("optimizer.g", cfg.optimizer.g), ("optimizer.d", cfg.optimizer.d)):
        choice(f"{key}.name", opt.name, OPTIMIZERS)
        positive(f"{key}.lr", opt.lr)
        if len(opt.betas) != 2:
            raise ConfigError(f"{key}.betas={opt.betas}: expected two values, like [0.9, 0.999]")
        for i, beta in enumerate(opt.betas):
            half_open_unit(f"{key}.betas[{i}]", beta)
        half_open_unit(f"{key}.momentum", opt.momentum)

    _check_trainer(cfg)

    choice("loss.g_loss", cfg.loss.g_loss, G_LOSSES)
    at_least("loss.r1_gamma", cfg.loss.r1_gamma, 0.0)
    at_least("loss.r1_every", cfg.loss.r1_every, 1)
    at_least("loss.gp_lambda", cfg.loss.gp_lambda, 0.0)
    choice("device", cfg.device.name, DEVICES)
    at_least("device.num_threads", cfg.device.num_threads, 0)
    choice("device.precision", cfg.device.precision, PRECISIONS)
    choice("logger", cfg.logger.name, LOGGERS)
    cores = os.cpu_count() or 1
    if cfg.device.num_threads > cores:
        raise ConfigError(
            f"device.num_threads={cfg.device.num_threads}: this machine has {cores} cores; "
            f"use 0 (torch's default) to {cores}"
        )


def waits_for_data(ds) -> bool:
    """Whether a dataset's classes are only known once its files are read (the user's image
    folders, before their record is filled in): its conditional checks run then."""
    return hasattr(ds, "recorded") and hasattr(ds, "num_classes") and not ds.recorded()


def check_conditional(cfg: Config) -> None:
    """A conditional model needs a labelled dataset, and takes all its classes (model.num_classes
    null: filled in from the dataset)."""
    ds, m = cfg.dataset, cfg.model
    classes = getattr(ds, "num_classes", 0)
    if not classes:
        raise ConfigError(
            f"model.conditional=true: the {ds.name} dataset has no class labels; conditional "
            "models train on the MNIST family and on image folders with class subfolders"
        )
    if m.num_classes is None:
        m.num_classes = classes
    if m.num_classes != classes:
        raise ConfigError(
            f"model.num_classes={m.num_classes}: the {ds.name} dataset has {classes} "
            "classes, and a conditional model takes them all"
        )
    at_least("model.label_dim", m.label_dim, 1)
    for key, value, plain in (
        ("model.d.pack", m.d.pack, 1),
        ("model.d.features", m.d.features, "samples"),
    ):
        if value != plain:
            raise ConfigError(
                f"{key}={value}: a conditional D judges single samples; use {key}={plain} "
                "with model.conditional=true"
            )


def _check_trainer(cfg: Config) -> None:
    t, ds = cfg.trainer, cfg.dataset
    if t.steps is None and t.epochs is None:
        raise ConfigError("trainer.steps and trainer.epochs are both unset: set one of them")
    if t.steps is not None:
        at_least("trainer.steps", t.steps, 1)
    elif ds.endless:
        raise ConfigError(
            f"trainer.epochs: the {ds.name} dataset is endless; set trainer.steps instead"
        )
    else:
        at_least("trainer.epochs", t.epochs, 1)
    for key in (
        "batch_size",
        "d_steps",
        "g_steps",
        "log_every",
        "sample_every",
        "checkpoint_every",
        "keep_checkpoints",
        "num_samples",
        "num_eval_samples",
    ):
        at_least(f"trainer.{key}", getattr(t, key), 1)
    half_open_unit("trainer.ema_decay", t.ema_decay)
    if not (isinstance(t.cuda_graph, bool) or t.cuda_graph == "auto"):
        raise ConfigError(
            f"trainer.cuda_graph={t.cuda_graph!r} is not a choice: expected auto, true or false"
        )
    if t.objective is None:
        t.objective = ds.default_objective
    choice("trainer.objective", t.objective, ds.eval_keys)
    if not 0 <= t.seed < 2**32:  # numpy's seeds are 32-bit
        raise ConfigError(f"trainer.seed={t.seed}: must be in [0, 2**32)")
    if cfg.model.d.features == "moments" and t.batch_size < 4:
        raise ConfigError(
            f"trainer.batch_size={t.batch_size}: model.d.features=moments needs at least 4"
        )
    _check_watch(t)


def _check_watch(t) -> None:
    """Periodic evaluation, early stop and rollback (gantool.training.watch)."""
    for key in ("eval_every", "patience", "max_rollbacks"):
        at_least(f"trainer.{key}", getattr(t, key), 0)
    at_least("trainer.num_periodic_eval_samples", t.num_periodic_eval_samples, 1)
    at_least("trainer.min_delta", t.min_delta, 0.0)
    left_open_unit("trainer.rollback_lr_factor", t.rollback_lr_factor)
    if t.eval_every and t.eval_every % t.log_every:
        raise ConfigError(
            f"trainer.eval_every={t.eval_every}: must be a multiple of "
            f"trainer.log_every={t.log_every} (an evaluation joins its step's metrics row)"
        )
    if t.patience and not t.eval_every:
        raise ConfigError(
            f"trainer.patience={t.patience}: early stop counts evaluations; set "
            "trainer.eval_every too"
        )


def choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(choice_message(key, value, allowed))


def choice_message(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    return f"{key}={value!r} is not a choice: expected one of {', '.join(allowed)}"


def number(key: str, value: Any, alternative: str = "") -> None:
    """For the fields a schema cannot type (dataset.centres, dataset.std)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}={value!r}: must be a number{alternative}")


def finite(key: str, value: float) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value}: must be a finite number")


def positive(key: str, value: float) -> None:
    finite(key, value)
    if not value > 0:
        raise ConfigError(f"{key}={value}: must be > 0")


def at_least(key: str, value: float, low: float) -> None:
    finite(key, value)
    if not value >= low:
        raise ConfigError(f"{key}={value}: must be >= {low}")


def half_open_unit(key: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ConfigError(f"{key}={value}: must be in [0, 1)")


def left_open_unit(key: str, value: float) -> None:
    if not 0 < value <= 1:
        raise ConfigError(f"{key}={value}: must be in (0, 1]")
