"""Options declared once, on the config dataclass of the step they belong to.

Each field of a step's config carries its default, help text and, where the command line spells it
differently, its flag. From that one declaration come the `cfrec` arguments (`add_arguments`,
`from_namespace`), the config built from a DAG's params or a `dag_run.conf` (`from_mapping`),
and the arguments handed to a spark-submit job (`to_argv`). Validation stays in the dataclass
itself (`__post_init__`), so every entry point checks values with the same code.

Nothing here imports more than the standard library: DAG files build their params from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from cfmodel.errors import CfrecError

T = TypeVar("T")


def option(
    default: Any = None,
    help: str = "",
    *,
    flag: str | None = None,
    metavar: str | tuple[str, ...] | None = None,
    choices: tuple | None = None,
    parse: Callable[[Any], Any] | None = None,
    negate: bool = False,
    nargs: str | int | None = None,
    const: Any = None,
    required: bool = False,
    cli: bool = True,
) -> Any:
    """A config field that is also a command-line option and a DAG param.

    `flag`: the command-line spelling (default `--field-name`). `parse`: turns a command-line or
    DAG value into the field's type (e.g. "100,50" -> (100, 50)). `negate`: a boolean whose flag
    turns it off (`--no-header`). `nargs="?"` with `const`: a flag that may be given without a
    value. `required`: the command line insists on it (a DAG takes it from its params' default).
    `cli=False`: a setting for the Python API and the DAGs only.
    """
    metadata = {
        "help": help,
        "flag": flag,
        "metavar": metavar,
        "choices": choices,
        "parse": parse,
        "negate": negate,
        "nargs": nargs,
        "const": const,
        "required": required,
        "cli": cli,
    }
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Option:
    name: str
    kind: type  # int, float, str, bool or tuple
    nullable: bool
    default: Any
    help: str
    flag: str
    metavar: str | tuple[str, ...] | None
    choices: tuple | None
    parse: Callable[[Any], Any] | None
    negate: bool
    nargs: str | int | None
    const: Any
    required: bool
    cli: bool


def _kind(hint: Any) -> tuple[type, bool]:
    """(base type, whether None is allowed) of an annotation such as `int | None`."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        base, _ = _kind(rest[0])
        return base, len(rest) < len(args)
    origin = typing.get_origin(hint)
    return (origin or hint), False


def options(cls: type) -> list[Option]:
    """The declared options of a config dataclass, in field order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        kind, nullable = _kind(hints[f.name])
        m = dict(f.metadata)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append(
            Option(f.name, kind, nullable, default, **{**m, "flag": m["flag"] or "--" + f.name.replace("_", "-")})
        )
    return out


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    only: tuple[str, ...] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Add `cls`'s options to `parser`. Their argparse default is None ("not given"), so the config's
    own default applies; `defaults` overrides a default for this command only."""
    defaults = defaults or {}
    for opt in options(cls):
        if not opt.cli or (only is not None and opt.name not in only):
            continue
        shown = defaults.get(opt.name, opt.default)
        text = (
            opt.help if shown is None or opt.kind is bool or opt.required else f"{opt.help} (default {_shown(shown)})"
        )
        kwargs: dict[str, Any] = {"dest": opt.name, "help": text.replace("%", "%%"), "default": defaults.get(opt.name)}
        if opt.kind is bool:
            kwargs.update(action="store_const", const=not opt.negate)
        else:
            metavar = opt.metavar or (None if opt.choices else opt.flag.lstrip("-").replace("-", "_").upper())
            kwargs.update(metavar=metavar, choices=opt.choices, required=opt.required)
            if opt.nargs:
                kwargs.update(nargs=opt.nargs, const=opt.const)
            if opt.kind in (int, float) and opt.parse is None:
                kwargs["type"] = opt.kind
        parser.add_argument(opt.flag, **kwargs)


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _convert(opt: Option, value: Any) -> Any:
    if value is None:
        return None
    if opt.parse is not None:
        return opt.parse(value)
    if opt.kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes"):
            return True
        if str(value).lower() in ("0", "false", "no"):
            return False
        raise CfrecError(f"{opt.name} must be true or false, got '{value}'")
    if opt.kind in (int, float, str):
        try:
            converted = opt.kind(value)
        except (TypeError, ValueError):
            raise CfrecError(f"{opt.name} must be {opt.kind.__name__}, got '{value}'") from None
        if opt.kind is int and isinstance(value, float) and value != converted:
            raise CfrecError(f"{opt.name} must be a whole number, got {value}")
        if opt.choices is not None and converted not in opt.choices:
            raise CfrecError(f"{opt.name} must be one of {', '.join(map(str, opt.choices))}, got '{value}'")
        return converted
    return value


def from_mapping(cls: type[T], values: Mapping[str, Any]) -> T:
    """A config from a mapping such as a DAG's params: keys that are not options of `cls` are
    ignored, None means "the default", and every value is converted (`parse`, which may itself
    give None, e.g. 'none' for no warm start) and checked as on the command line."""
    given = {}
    for opt in options(cls):
        if opt.name in values and values[opt.name] is not None:
            given[opt.name] = _convert(opt, values[opt.name])
    return cls(**given)


def from_namespace(cls: type[T], args: argparse.Namespace) -> T:
    """A config from parsed command-line arguments (options not given keep the config's default)."""
    return from_mapping(cls, {k: v for k, v in vars(args).items() if v is not None})


def to_argv(config: Any) -> list[str]:
    """The command-line arguments that rebuild `config`: every required option and every option
    whose value is not its default, as the spark-submit jobs read them."""
    argv: list[str] = []
    for opt in options(type(config)):
        value = getattr(config, opt.name)
        if not opt.cli or value is None:
            continue
        if value == opt.default and not opt.required:
            continue
        if opt.kind is bool:
            if value == (not opt.negate):
                argv.append(opt.flag)
            continue
        if opt.nargs == 2:  # LO HI: two arguments
            argv += [opt.flag, *(str(v) for v in value)]
            continue
        text = _shown(value)
        argv += [f"{opt.flag}={text}"] if text.startswith("-") else [opt.flag, text]
    return argv


def param_schema(opt: Option) -> dict[str, Any]:
    """The JSON-schema type of an option, for an Airflow Param."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", tuple: "array"}
    kind = names.get(opt.kind, "string")
    schema: dict[str, Any] = {"type": ["null", kind] if opt.nullable or opt.default is None else kind}
    if opt.choices is not None:
        schema["enum"] = [*opt.choices, *([None] if opt.nullable or opt.default is None else [])]
    return schema
