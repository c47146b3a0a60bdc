"""Helpers the command modules share: options whose default and bounds are a model field's, comma lists,
and the root group that prints usage errors on one line like every other error."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import PurePath
from typing import Annotated, Any

import typer
from pydantic import BaseModel, TypeAdapter, ValidationError
from typer.core import TyperGroup

from sefe.errors import USER_ERROR_EXIT, InputError


def arg_default(func: Callable[..., Any], name: str) -> Any:
    """The default of one keyword argument of a library function the command calls."""
    return inspect.signature(func).parameters[name].default


def default(model: type[BaseModel], name: str) -> Any:
    """The default of one field of a pydantic model (the one source of CLI defaults)."""
    return model.model_fields[name].get_default(call_default_factory=True)


def field_check(model: type[BaseModel], name: str) -> Callable[[Any], Any]:
    """A typer callback that checks an option's value against the bounds of one model field.

    The bounds stay on the model (one source for CLI, config files and the API); checking them while parsing
    makes a bad value a usage error that names the option and the valid range, before any work starts.
    """
    info = model.model_fields[name]
    return type_check(Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation)


def type_check(annotation: Any) -> Callable[[Any], Any]:
    """A typer callback that checks an option's value against a constrained type (`OutputDir`, ...)."""
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)

    def check(value: Any) -> Any:
        if value is None:  # not given: the model's default applies
            return value
        given = str(value) if isinstance(value, PurePath) else value  # a Path field takes the text too
        try:
            adapter.validate_python(given)
        except ValidationError as exc:
            msgs = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            named = isinstance(given, str) and given in msgs  # the check's message names the value
            raise typer.BadParameter(msgs if named else f"{given!r}: {msgs}") from None
        return value

    return check


def numbers_check(model: type[BaseModel], name: str) -> Callable[[str], str]:
    """A typer callback for a comma list of numbers, each checked against one model field's bounds."""
    check = field_check(model, name)

    def numbers(value: str) -> str:
        for word in split_list([value]):
            try:
                number = float(word)
            except ValueError:
                raise typer.BadParameter(f"{word!r} is not a number") from None
            check(number)
        return value

    return numbers


def model_option(
    model: type[BaseModel],
    name: str,
    *decls: str,
    help: str,
    default_value: Any = ...,
    **kwargs: Any,
) -> Any:
    """A `typer.Option` for one model field: default (unless `default_value` is given) and bounds from it."""
    if default_value is not ...:
        value = default_value
    else:  # the field's default; a required field makes a required option
        value = ... if model.model_fields[name].is_required() else default(model, name)
    return typer.Option(value, *decls, help=help, callback=field_check(model, name), **kwargs)


def split_list(values: Sequence[str] | None) -> list[str]:
    """`--x 10 --x 20` and `--x 10,20` both work (same for --tasks)."""
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def names_option(value: str | Sequence[str] | None, option: str) -> list[str] | None:
    """A comma list of names (`--tasks A,B`; a repeatable option's values too): None when not given; given
    but empty is a user error naming the option (not the model's `List should have at least 1 item`)."""
    if value is None or (not isinstance(value, str) and not value):
        return None
    given = value if isinstance(value, str) else ",".join(value)
    names = split_list([given])
    if not names:
        raise InputError(f"{option}: no names in {given!r} (expected a comma list such as A,B)")
    return names


def parse_floats(values: list[str], option: str) -> list[float]:
    """Numbers of a comma-list option; a word that is no number is a user error naming the option."""
    out = []
    for v in values:
        try:
            out.append(float(v))
        except ValueError:
            raise InputError(f"{option}: {v!r} is not a number") from None
    return out


class OneLineErrors(TyperGroup):
    """The root group: a usage error (unknown option, bad choice, value out of range) prints
    `error: <one line>` on stderr and exits with 2, like the errors commands raise (`report_errors`)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        run = functools.partial(
            super().main, args, prog_name, complete_var, False, windows_expand_args, **extra
        )
        if not standalone_mode:
            return run()
        # the click typer runs on (its own copy in recent typer releases)
        click_errors = sys.modules[typer.BadParameter.__module__]
        try:
            rv = run()
        except click_errors.NoArgsIsHelpError as exc:  # `sefe`, `sefe asd`: the help, as before
            exc.show()
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            msg = " ".join(exc.format_message().replace("Value error, ", "").split())
            print(f"error: {msg}", file=sys.stderr, flush=True)
            sys.exit(exc.exit_code if isinstance(exc, click_errors.UsageError) else USER_ERROR_EXIT)
        except typer.Abort:
            print("Aborted.", file=sys.stderr, flush=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)
