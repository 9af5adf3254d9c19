"""absl flags generated from the config records, so a flag and its field cannot drift."""

import dataclasses
import types
import typing

from absl import flags


class _FieldParser(flags.ArgumentParser):
  """Parses a flag's text with the field's own `parse` function."""

  def __init__(self, parse):
    self._parse_text = parse

  def parse(self, argument):
    if not isinstance(argument, str):
      return argument  # A default that is already a value.
    try:
      return self._parse_text(argument)
    except ValueError as e:
      raise ValueError(str(e)) from None

  def flag_type(self):
    return "string"


def _base_type(hint):
  """int for `int | None`, and so on; None for unions of several types."""
  if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 else None
  return hint


def define_flags(config_cls, *, exclude=(), flag_values=flags.FLAGS):
  """Defines one absl flag per field of a config dataclass.

  Args:
    config_cls: an `imgrec.config` record class.
    exclude: field names that get no flag.
    flag_values: the FlagValues to define them in.

  Returns:
    The names of the flags defined.
  """
  hints = typing.get_type_hints(config_cls)
  names = []
  for f in dataclasses.fields(config_cls):
    meta = f.metadata
    if f.name in exclude or not meta.get("flag", True):
      continue
    default, choices = f.default, meta.get("choices")
    help_text = meta["help"]
    kind = _base_type(hints[f.name])
    kw = dict(flag_values=flag_values)
    if meta.get("parse") is not None:
      flags.DEFINE(_FieldParser(meta["parse"]), f.name, default, help_text,
                   **kw)
    elif choices is not None and all(isinstance(c, str) for c in choices):
      flags.DEFINE_enum(f.name, default, choices, help_text, **kw)
    elif choices is not None:
      help_text += f" One of: {', '.join(map(str, choices))}."
      flags.DEFINE_integer(f.name, default, help_text, **kw)
    elif kind is bool:
      flags.DEFINE_boolean(f.name, default, help_text, **kw)
    elif kind is int:
      flags.DEFINE_integer(f.name, default, help_text, **kw)
    elif kind is float:
      flags.DEFINE_float(f.name, default, help_text, **kw)
    else:
      flags.DEFINE_string(f.name, default, help_text, **kw)
    for alias in meta.get("aliases", ()):
      flags.DEFINE_alias(alias, f.name, flag_values=flag_values)
    names.append(f.name)
  return names


def config_from_flags(config_cls, names, flag_values=flags.FLAGS):
  """Builds a config from the parsed flags `names` (the rest keep defaults)."""
  return config_cls(**{n: flag_values[n].value for n in names})
