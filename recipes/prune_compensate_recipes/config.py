"""Recipe configuration shared by every recipe: one YAML file per run, overridable with ``key=value``.

Like torchtune's recipes, a config is a readable YAML file (``configs/*.yaml`` in this package,
named by ``--config NAME`` or given as a path) that maps
onto a recipe's dataclasses section by section; ``pc run <recipe> --config FILE train.lr=1e-3``
overrides any field by its dotted name (values are parsed as YAML: ``true``, ``3``, ``1e-3``,
``[q, v]``). Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from prune_compensate import PCError

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def resolve_config_path(path: str | Path) -> Path:
    """A config file: the path as given, else a shipped config of that name (``elmm_minilm_umls``,
    ``tofu_umls.yaml``, or an old ``recipes/configs/NAME.yaml`` path)."""
    given = Path(path)
    if given.is_file():
        return given
    name = given.name if given.suffix in (".yaml", ".yml") else f"{given.name}.yaml"
    shipped = CONFIG_DIR / name
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise PCError(f"config {path} does not exist", f"pass a YAML file or a shipped config: {names}")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise PCError(f"config section {where or 'root'} must be a mapping", "fix the YAML")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise PCError(f"unknown config key {where + key!r}", f"valid keys here: {', '.join(fields)}")
        default = fields[key].default_factory() if fields[key].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value or {}, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(value, str(fields[key].type), where + key)
    return cls(**kwargs)


def _coerce(value: Any, annotation: str, key: str) -> Any:
    """YAML reads ``1e-3`` as a string (YAML 1.1 wants ``1.0e-3``): numbers are converted by the
    field's annotation, and a value of the wrong kind is an error naming the key. YAML 1.1 also
    reads ``no`` / ``off`` as False: for a text field (``train.mixed_precision=no``) that is "no"."""
    if isinstance(value, bool) and annotation.startswith("str"):
        return "yes" if value else "no"
    if value is None or isinstance(value, bool):
        return value
    try:
        if annotation.startswith("float") and isinstance(value, (str, int)):
            return float(value)
        if annotation.startswith("int") and isinstance(value, str):
            return int(value)
    except ValueError as err:
        raise PCError(f"config key {key!r} wants a number, got {value!r}", "fix the value") from err
    return value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-3", "prune.k=3"]`` applied to a nested dict (values parsed as YAML)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise PCError(f"override {item!r} is not key=value", "write e.g. train.lr=1e-3")
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise PCError(f"override {item!r}: {part!r} is not a section", "check the key")
        node[parts[-1]] = yaml.safe_load(raw)
    return values


def load_dataclass_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Read a YAML config into ``cls`` (or start from its defaults), apply overrides, then call
    the config's ``validate()``."""
    values: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise PCError(f"config {path} is not valid YAML ({err})".replace("\n", " "), "fix the file") from err
    values = apply_overrides(values, overrides or [])
    return _build(cls, values, "").validate()


def save_config(config: Any, path: Path) -> None:
    """The resolved config as YAML (every field, so a run can be reproduced from it)."""
    path.write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False), encoding="utf-8")
