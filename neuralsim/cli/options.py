"""Command-line options generated from a config dataclass: one declaration, as CleanRL's ``tyro.cli(Args)``.

Every field of the dataclass becomes an option: ``--field-name`` (underscores as dashes), its type from the
annotation (``int``, ``float``, ``str``, each optionally ``| None``; ``bool`` as ``--name/--no-name``), its default
from the field, and its help from the comment written beside the field (and the comment lines under it)::

    @dataclass
    class TrainConfig:
        steps: int = 2000  # optimisation steps of the stage

gives ``--steps STEPS  optimisation steps of the stage (default: 2000)``. What only the command line needs (a
positional, a required option, another flag name, choices, a field whose type is not a plain scalar) is said in
an :class:`Option` for that field; nothing else about a field is repeated.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Option:
    """What the command line adds to one field of the config (every part optional).

    Attributes:
        flags: the option strings (default ``("--field-name",)``).
        positional: a positional argument instead of an option.
        required: the option must be given (no default).
        choices: the accepted values.
        help: the help text, when the field's comment does not say what the user needs.
        metavar: the value's name in the help.
        append: the option may repeat; its values are collected in a list, turned into the field's value by
            ``parse``.
        parse: turns the parsed value (the list for ``append``) into the field's value; may raise
            ``ValueError`` naming the option (reported as the command's one-line error).
    """

    flags: tuple[str, ...] = ()
    positional: bool = False
    required: bool = False
    choices: tuple[Any, ...] | None = None
    help: str | None = None
    metavar: str | None = None
    append: bool = False
    parse: Callable[[Any], Any] | None = None


def field_comments(cls: type) -> dict[str, str]:
    """The comment beside each field of dataclass ``cls`` in its source, with the comment lines under it."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (a frozen app): options without help
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    comments: dict[str, list[str]] = {}
    current = None  # the field whose line (or comment block) we are in
    line_start = True
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.INDENT, tokenize.DEDENT):
            continue
        if tok.type == tokenize.COMMENT:
            if current is not None:
                comments.setdefault(current, []).append(tok.string.lstrip("#").strip())
            continue
        if tok.type == tokenize.NL:  # a comment-only line keeps the field of the line above; a blank one ends it
            if not tok.line.strip():
                current = None
            continue
        if tok.type == tokenize.NEWLINE:
            line_start = True
            continue
        if line_start:
            current = tok.string if tok.type == tokenize.NAME and tok.string in names else None
            line_start = False
    return {name: " ".join(parts) for name, parts in comments.items() if any(parts)}


def _scalar_type(annotation: Any) -> tuple[type, bool]:
    """``(T, optional)`` for an annotation ``T`` or ``T | None`` with ``T`` in bool, int, float, str."""
    args = typing.get_args(annotation)
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        annotation, optional = (rest[0] if len(rest) == 1 else annotation), True
    if annotation in (bool, int, float, str):
        return annotation, optional
    raise TypeError(f"no command-line type for {annotation!r}; give the field an Option with parse=")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type,
                            options: dict[str, Option] | None = None) -> None:
    """Add one argument per field of dataclass ``cls`` to ``parser`` (dest = the field's name).

    Raises:
        TypeError: a field whose type has no command-line form and no :class:`Option` ``parse``.
    """
    options = options or {}
    unknown = set(options) - {f.name for f in dataclasses.fields(cls)}
    assert not unknown, f"options for fields {cls.__name__} does not have: {sorted(unknown)}"
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        opt = options.get(f.name, Option())
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        text = (opt.help if opt.help is not None else comments.get(f.name, "")).replace("%", "%%")  # argparse formats it
        kwargs: dict[str, Any] = {}
        if opt.append:
            kwargs.update(action="append", default=[])
        else:
            kind, _ = (None, None) if opt.parse is not None else _scalar_type(hints[f.name])
            if kind is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif kind is not None:
                kwargs["type"] = kind
            if not opt.positional and not opt.required:
                kwargs["default"] = default
                if default is not None and "default" not in text:
                    text = f"{text} (default: %(default)s)" if text else "default: %(default)s"
        if opt.choices is not None:
            kwargs["choices"] = opt.choices
        if opt.metavar is not None:
            kwargs["metavar"] = opt.metavar
        if opt.positional:
            parser.add_argument(f.name, help=text, **kwargs)
            continue
        flags = opt.flags or ("--" + f.name.replace("_", "-"),)
        if opt.required:
            kwargs["required"] = True
        action = parser.add_argument(*flags, dest=f.name, **kwargs)
        action.help = text  # set after: some Pythons' BooleanOptionalAction append their own "(default: ...)"


def dataclass_from_args(cls: type, args: argparse.Namespace, options: dict[str, Option] | None = None) -> Any:
    """The ``cls`` instance of parsed arguments (``parse`` of each field's :class:`Option` applied)."""
    options = options or {}
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name)
        parse = options.get(f.name, Option()).parse
        values[f.name] = parse(value) if parse is not None else value
    return cls(**values)


__all__ = ["Option", "field_comments", "add_dataclass_arguments", "dataclass_from_args"]
