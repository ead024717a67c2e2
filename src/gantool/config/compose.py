"""From `configs/` and overrides to a typed, range-checked Config, through Hydra.

`compose` runs Hydra's composition (as `gantool train` would) and `typed` merges the result
into the schemas and checks its ranges. Every mistake comes out as a ConfigError with one
line. What needs more than the config itself (a dataset's files, the list of losses) is
checked one layer up: gantool.datasets.registry.load_config does all of it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gantool.config.checks import choice_message, validate
from gantool.config.datasets import SCHEMAS
from gantool.config.schema import Config
from gantool.core.errors import ConfigError, first_line


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore, where the YAML files' defaults lists find them."""
    # ${pid:} in the run folder's name: two runs started in the same second never share one.
    # Cached, like Hydra's ${now:}: Hydra copies the cache into each job's config, so jobs that
    # parallel launchers run in other processes still share the sweep's folder.
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)
    cs = ConfigStore.instance()
    cs.store(group="schema", name="train", node=Config)
    for name, schema in SCHEMAS.items():
        cs.store(group="schema/dataset", name=name, node=schema)


def config_dir() -> Path:
    """The folder of YAML configs: inside the installed package, or at the top of a checkout."""
    packaged = Path(__file__).parents[1] / "configs"
    return packaged if packaged.is_dir() else Path(__file__).parents[3] / "configs"


def compose(overrides: list[str]) -> DictConfig:
    """`configs/train.yaml` composed with overrides, as `gantool train` composes it."""
    register_configs()
    try:
        with initialize_config_dir(str(config_dir()), version_base=None):
            return hydra_compose("train", overrides=overrides)
    except Exception as e:  # Hydra raises its own errors, and ValueError or TypeError for some
        raise ConfigError(describe_config_error(e, overrides)) from e


def typed(cfg: DictConfig | dict) -> Config:
    """A composed config (or a checkpoint's plain dict) as a Config, typed and range-checked."""
    try:
        if isinstance(cfg, DictConfig):  # as plain values: a typed source would keep stray keys
            cfg = OmegaConf.to_container(cfg, resolve=True)
        cfg = OmegaConf.create(cfg)
    except OmegaConfBaseException as e:  # a bad ${...} interpolation, say
        raise ConfigError(describe_config_error(e)) from e
    name = OmegaConf.select(cfg, "dataset.name")
    if name not in SCHEMAS:
        raise ConfigError(choice_message("dataset.name", name, tuple(SCHEMAS)))
    # Merging into the schemas re-applies their types, so a plain dict is checked like YAML.
    try:
        schema = OmegaConf.structured(Config)
        schema.dataset = OmegaConf.structured(SCHEMAS[name])
        OmegaConf.set_struct(schema, True)  # a key the schema lacks is an error, even `+key=`
        config: Config = OmegaConf.to_object(OmegaConf.merge(schema, cfg))
    except OmegaConfBaseException as e:
        raise ConfigError(describe_config_error(e)) from e
    validate(config)
    return config


def defaults() -> dict:
    """Every schema default but the dataset's, as plain values: what a key that a saved config
    lacks (an older gantool's) meant."""
    return OmegaConf.to_container(OmegaConf.structured(Config))


def to_dict(config: Config) -> dict:
    """The config as plain Python values, for checkpoints and summaries."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested config dict as {"a.b.c": value}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# --- one line for a composition error -----------------------------------------------------------
# Hydra plugins that gantool installs only with an extra: which extra brings which option.
PLUGIN_EXTRAS = {
    "hydra/launcher=submitit_slurm": "slurm",
    "hydra/launcher=submitit_local": "slurm",
    "hydra/sweeper=optuna": "optuna",
}


def describe_config_error(error: Exception, overrides: list[str] | None = None) -> str:
    """One line for a Hydra or OmegaConf composition error: the key, the value, what is allowed.

    `overrides`, when given, lets a parse error name the override that failed.
    """
    cause = error.__cause__ if error.__cause__ is not None else error
    text = str(error)
    missing = re.search(r"Could not (?:find|load) '(.+)/([^'/]+)'", text)
    if missing:
        group, option = missing.groups()
        available = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)+)", text)
        if not available:
            return f"{group}={option} is not a choice (`gantool train --help` lists them)"
        choices = ", ".join(available.group(1).split())
        extra = PLUGIN_EXTRAS.get(f"{group}={option}")
        hint = f" (it comes with pip install 'gantool[{extra}]')" if extra else ""
        return f"{group}={option} is not a choice: expected one of {choices}{hint}"
    full_key = getattr(cause, "full_key", None)
    object_type = getattr(cause, "object_type", None)
    line = first_line(getattr(cause, "msg", None) or cause)
    if full_key and type(cause).__name__ in ("ConfigAttributeError", "ConfigKeyError"):
        parent, _, key = full_key.rpartition(".")
        known = (
            [f.name for f in dataclasses.fields(object_type)]
            if dataclasses.is_dataclass(object_type)
            else []
        )
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {'.'.join(filter(None, [parent, close[0]]))}?)" if close else ""
        where = f"{parent} has" if parent else "known keys:"
        listing = f"; {where} {', '.join(known)}" if known else ""
        return f"{full_key}: no such key{hint}{listing}"
    if full_key:
        return f"{full_key}: {line}"
    culprit = _not_an_option_name(overrides or [])  # `group=null`, `group=0`, `group=[0]`
    if culprit:
        return f"{culprit}: a config group takes the name of one of its options"
    if type(error).__name__ == "OverrideParseException":
        culprit = _unparsable(overrides or [])
        what = f"the override {culprit!r}" if culprit else "the overrides"
        return f"cannot parse {what}: {line}"
    if overrides and not type(error).__module__.startswith(("hydra", "omegaconf")):
        # A plain TypeError or ValueError from inside Hydra says nothing of the input.
        return f"cannot compose the config from {' '.join(overrides)}: {line}"
    return line


def _parse_each(overrides: list[str]):
    """Each override with Hydra's parse of it, or None where it does not parse."""
    parser = OverridesParser.create()
    for override in overrides:
        try:
            yield override, parser.parse_override(override)
        except Exception:  # Hydra's parse errors have no common public base
            yield override, None


def _not_an_option_name(overrides: list[str]) -> str | None:
    for override, parsed in _parse_each(overrides):
        if parsed is None or "." in parsed.key_or_group:
            continue
        value = parsed.value()
        names = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in names):
            return override
    return None


def _unparsable(overrides: list[str]) -> str | None:
    return next((o for o, parsed in _parse_each(overrides) if parsed is None), None)
