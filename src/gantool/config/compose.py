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

from gantool.config import schema as schema_module
from gantool.config.checks import choice_message, validate
from gantool.config.datasets import SCHEMAS
from gantool.config.schema import Config
from gantool.core.errors import ConfigError, first_line

# The schema's nested dataclasses by name (field types are strings under `annotations`).
_SCHEMA_NODES = {
    name: node
    for name, node in vars(schema_module).items()
    if isinstance(node, type) and dataclasses.is_dataclass(node)
}


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore, where the YAML files' defaults lists find them."""
    # ${pid:} in the run folder's name: two runs started in the same second never share one.
    # Cached, like Hydra's ${now:}: Hydra copies the cache into each job's config, so jobs that
    # parallel launchers run in other processes still share the sweep's folder.
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)
    # `gantool train --help` lists the groups with ${gantool_groups:} (configs/train.yaml).
    OmegaConf.register_new_resolver("gantool_groups", group_listing, replace=True)
    cs = ConfigStore.instance()
    cs.store(group="schema", name="train", node=Config)
    for name, schema in SCHEMAS.items():
        cs.store(group="schema/dataset", name=name, node=schema)


def config_dir() -> Path:
    """The folder of YAML configs: inside the installed package, or at the top of a checkout."""
    packaged = Path(__file__).parents[1] / "configs"
    return packaged if packaged.is_dir() else Path(__file__).parents[3] / "configs"


# Groups whose options named after a dataset are that dataset's own defaults, which a dataset
# option brings by itself (configs/train.yaml: `model: ${dataset}` and the like).
PER_DATASET = ("model", "optimizer", "trainer", "loss")


def group_listing() -> str:
    """The config groups and the options a user chooses from, one line each."""
    folder = config_dir()
    groups = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name != "hydra")
    datasets = {p.stem for p in (folder / "dataset").glob("*.yaml")}
    lines = []
    for group in groups:
        names = sorted(p.stem for p in (folder / group).glob("*.yaml"))
        if group in PER_DATASET:
            names = [n for n in names if n not in datasets]
        if names:
            lines.append(f"{group}: {', '.join(names)}")
        else:
            lines.append(f"{group}: the dataset's own (override its keys, like {group}.<key>=...)")
    return "\n".join(lines)


def compose(overrides: list[str]) -> DictConfig:
    """`configs/train.yaml` composed with overrides, as `gantool train` composes it."""
    register_configs()
    check_booleans(overrides)
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


# --- overrides a run folder stores -------------------------------------------------------------
def check_stored(overrides: list[str], source: Path) -> None:
    """Refuse, naming the line, any override of a run folder's .hydra/overrides.yaml that is not
    a plain setting of gantool's: `group=option` for one of configs/' groups, `key=value` for a
    key of the schema with a plain value (numbers, strings, booleans, null, lists of them).

    A run folder may come from anywhere, and composing its overrides runs Hydra: `hydra.*`
    keys (callbacks, logging handlers), `_target_` (objects to build), `+`/`~`/`++` (keys
    outside the schema) and ${...} interpolations are never stored by gantool, so they are
    never read back. The user's own command-line overrides are theirs and are not checked."""
    parser = OverridesParser.create()
    groups = {p.name for p in config_dir().iterdir() if p.is_dir()} - {"hydra"}
    for number, line in enumerate(overrides, 1):
        try:
            parsed = parser.parse_override(line)
        except Exception:  # Hydra's parse errors have no common public base
            why = "it does not parse as an override"
        else:
            why = _unsafe(parsed, groups)
        if why:
            raise ConfigError(
                f"{source} line {number}: {line!r} is refused: {why}. A run folder's overrides "
                "are gantool's own settings only; restore the file or start a new run"
            )


def _unsafe(parsed, groups: set[str]) -> str | None:
    """Why a parsed stored override is not a plain gantool setting, or None."""
    key = parsed.key_or_group
    if key.split("/")[0].split(".")[0] == "hydra" or parsed.package is not None:
        return "Hydra's own settings are not a run's"
    if "_target_" in (parsed.input_line or ""):
        return "it names an object to build (_target_)"
    if parsed.is_delete() or parsed.is_add() or parsed.is_force_add():
        return "it adds or deletes a key (+, ++, ~) beyond gantool's schema"
    if parsed.is_sweep_override():
        return "a run holds one value per key, not a sweep"
    value = parsed.value()
    if "." not in key:
        if key not in groups:
            return f"{key} is not one of gantool's config groups ({', '.join(sorted(groups))})"
        if not isinstance(value, str) or not value.isidentifier():
            return f"{value!r} is not the name of a {key} option"
        return None
    if not _in_schema(key.split(".")):
        return f"{key} is not a key of gantool's config"
    if not _plain(value):
        return "its value is not a plain number, string, boolean, null or list of them"
    return None


def _in_schema(path: list[str]) -> bool:
    """Whether a dotted key names a field of the Config schema (any dataset schema's, under
    dataset)."""
    return _field_type(path) is not None


def _field_type(path: list[str]) -> str | None:
    """The type of the schema's leaf field a dotted key names, as written in the schema
    ("bool", "int | None", ...), or None if it names none."""
    head, rest = path[0], path[1:]
    if head == "dataset":
        fields = {f.name: f for schema in SCHEMAS.values() for f in dataclasses.fields(schema)}
        return str(fields[rest[0]].type) if len(rest) == 1 and rest[0] in fields else None
    node: type | None = Config
    kind = None
    for part in path:
        fields = {f.name: f for f in dataclasses.fields(node)} if node else {}
        if part not in fields:
            return None
        kind = str(fields[part].type)
        node = _SCHEMA_NODES.get(kind)
    return None if node is not None else kind  # a leaf, not a whole group of keys


def check_booleans(overrides: list[str]) -> None:
    """A bool key takes true or false, nothing else: OmegaConf would take 2, or "yes", as
    true. (Overrides that do not parse are left to Hydra, which names them.)"""
    parser = OverridesParser.create()
    for line in overrides:
        try:
            parsed = parser.parse_override(line)
        except Exception:  # Hydra's parse errors have no common public base
            continue
        key = parsed.key_or_group
        if "." not in key or parsed.is_sweep_override() or _field_type(key.split(".")) != "bool":
            continue
        if not isinstance(parsed.value(), bool):
            raise ConfigError(f"{key}={parsed.value()!r}: must be true or false")


def _plain(value) -> bool:
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, str):
        return "${" not in value
    return value is None or isinstance(value, bool | int | float)


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
