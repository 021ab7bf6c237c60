"""Typed configs: one loader for every trainer and recipe.

A config is a dataclass whose fields are declared with :func:`setting` — default, one line
of help, and the range a value must lie in. :func:`load_config` builds one from, in this
order (later wins): the dataclass defaults, an optional YAML file, and ``key=value``
overrides::

    cfg = load_config(TrainConfig, "configs/shapeworld.yaml", ["lr=3e-4", "ema_decay=0.99"])

(each further argument is a list of ``key=value`` strings or a mapping, applied in turn).

Values are converted to the field's type (``int``, ``float``, ``bool``, ``str``, ``Path``,
``Literal``, ``Optional``, lists and tuples); a field that is itself a dataclass is set with
dotted keys (``sample.steps=10``) or a nested mapping in the file. An unknown key, a value
of the wrong type, a non-finite float or one out of range is a :class:`ConfigError` whose
message is one line naming the key and, for an unknown key, the valid ones. Torch-free, so
the CLI can build its options from a config without importing torch.

On the command line, ``rewardlab.cli.common.config_options(Config)`` gives a command
``--config FILE``, ``KEY=VALUE`` overrides, ``--print-config`` and one option per field, all
generated from the dataclass (``world train``, ``world train-clip``); a recipe
command (``rewardlab train RECIPE --config FILE [KEY=VALUE ...]``) resolves its recipe's
config class at run time and calls :func:`load_config` the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, TypeVar, Union

C = TypeVar("C")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message is one line."""


def setting(default: Any, help: str, *, min: float | None = None, max: float | None = None,
            gt: float | None = None) -> Any:
    """A config field: ``default``, a one-line ``help``, and bounds (``min``/``max``
    inclusive, ``gt`` exclusive) that every value from a file, an override or an option is
    checked against. Lists and other mutable defaults are copied for each instance."""
    meta = {"help": help, "min": min, "max": max, "gt": gt}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One (possibly dotted) key of a config, as the loader and the CLI see it."""
    key: str
    type: Any
    default: Any
    help: str
    field: dataclasses.Field


def settings(cls: type) -> list[Setting]:
    """Every settable key of the dataclass ``cls``, nested dataclasses flattened to dotted keys."""
    out = []
    hints = typing.get_type_hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += [dataclasses.replace(s, key=f"{f.name}.{s.key}") for s in settings(tp)]
        else:
            out.append(Setting(f.name, tp, getattr(instance, f.name), f.metadata.get("help", ""), f))
    return out


def load_config(cls: type[C], path: str | Path | None = None,
                *layers: Mapping[str, Any] | Iterable[str]) -> C:
    """``cls`` with its defaults, then the YAML file ``path`` (if given), then each of
    ``layers`` in turn — ``"key=value"`` strings, or a mapping of key to value (the CLI's
    options); ConfigError on anything unusable."""
    known = {s.key: s for s in settings(cls)}
    values: dict[str, Any] = {}
    if path is not None:
        for key, value in flatten(read_yaml(path)).items():
            values[key] = _convert(_lookup(known, key, f"{path}: "), value, f"{path}: ")
    for layer in layers:
        items = layer.items() if isinstance(layer, Mapping) else map(parse_override, layer)
        for key, value in items:
            values[key] = _convert(_lookup(known, key), value)
    return _build(cls, values)


def parse_override(item: str) -> tuple[str, str]:
    """``"lr=3e-4"`` → ``("lr", "3e-4")``."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"an override must look like KEY=VALUE, got {item!r}")
    return key.strip(), value.strip()


def check_value(s: Setting, value: Any, where: str = "") -> Any:
    """``value`` converted to the type of setting ``s`` and checked against its bounds."""
    return _convert(s, value, where)


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config {path} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of key: value, got {type(data).__name__}")
    return data


def to_yaml(cfg: Any) -> str:
    """``cfg`` as a YAML file that :func:`load_config` reads back, each key under its help."""
    lines = []
    for s in settings(type(cfg)):
        value = cfg
        for part in s.key.split("."):
            value = getattr(value, part)
        lines += [f"# {s.help}" if s.help else "#", f"{s.key}: {_yaml_value(value)}"]
    return "\n".join(lines) + "\n"


def describe_bounds(s: Setting) -> str:
    """``"≥ 1"``, ``"positive"``, ``"0 … 1"`` or ``""``."""
    lo, hi, gt = (s.field.metadata.get(k) for k in ("min", "max", "gt"))
    if gt == 0 and lo is None and hi is None:
        return "positive"
    if lo is not None and hi is not None:
        return f"{lo} … {hi}"
    parts = [f"≥ {lo}" if lo is not None else "", f"> {gt}" if gt is not None else "",
             f"≤ {hi}" if hi is not None else ""]
    return ", ".join(p for p in parts if p)


# ---- internals ----
def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys: ``{"train": {"lr": 1}}`` → ``{"train.lr": 1}``."""
    out = {}
    for key, value in data.items():
        key = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, key + "."))
        else:
            out[key] = value
    return out


def _lookup(known: dict[str, Setting], key: str, where: str = "") -> Setting:
    if key in known:
        return known[key]
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"{where}unknown setting {key!r}{hint}; valid: {', '.join(known)}")


def _convert(s: Setting, value: Any, where: str = "") -> Any:
    try:
        value = _to_type(value, s.type)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}{s.key}={_show(value)}: {e}") from None
    problem = _out_of_bounds(s, value)
    if problem:
        raise ConfigError(f"{where}{s.key}={_show(value)}: {problem}")
    return value


def _to_type(value: Any, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or _is_none(value)):
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _to_type(value, rest[0])
        for a in rest:
            try:
                return _to_type(value, a)
            except (TypeError, ValueError):
                pass
        raise ValueError(f"expected one of {', '.join(_name(a) for a in rest)}")
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ValueError(f"expected one of {', '.join(map(str, args))}")
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str):
            value = _parse_sequence(value)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, e.g. [1, 2]")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"expected {len(args)} values")
            return tuple(_to_type(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        items = [v if item is Any else _to_type(v, item) for v in value]
        return tuple(items) if (origin or tp) is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOLS:
            return _BOOLS[value.lower()]
        raise ValueError("expected true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError("expected an integer")
        try:
            return int(value)
        except ValueError:
            raise ValueError("expected an integer") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError("expected a number")
        try:
            value = float(value)
        except ValueError:
            raise ValueError("expected a number") from None
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)) or not str(value):
            raise ValueError("expected a path")
        return Path(value)
    if tp is Any:
        return value
    raise TypeError(f"settings of type {_name(tp)} are not supported by the config loader")


def _out_of_bounds(s: Setting, value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    lo, hi, gt = (s.field.metadata.get(k) for k in ("min", "max", "gt"))
    if (lo is not None and value < lo) or (hi is not None and value > hi) or (gt is not None and value <= gt):
        return f"must be {describe_bounds(s)}"
    return ""


def _build(cls: type[C], values: dict[str, Any], prefix: str = "") -> C:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], values, key + ".")
        elif key in values:
            kwargs[f.name] = values[key]
    return cls(**kwargs)


def _parse_sequence(text: str) -> list:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if isinstance(value, list):
        return value
    return [v.strip() for v in text.strip("[]()").split(",") if v.strip()]


def _is_none(value: Any) -> bool:
    return isinstance(value, str) and value.lower() in ("none", "null", "~", "")


def _yaml_value(value: Any) -> str:
    import json

    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, float):
        return repr(value)  # 0.0006 and 6e-04 both read back as this float
    return json.dumps(value)  # JSON is YAML: strings quoted, lists in brackets, null


def _show(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


_BOOLS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False, "1": True, "0": False}
