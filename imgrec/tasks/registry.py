"""Registered tasks: `register_task`, `get_task`, `list_tasks` (Model Garden's task_factory).

    @registry.register_task("image_classification", aliases=("image",))
    class ImageClassificationTask(base.Task): ...

A run folder records its task's name; every command asks the registry for
it. Registering a name twice raises; an unknown name raises with the list
of known ones.
"""

import importlib

from imgrec.errors import ImgrecError

_TASKS = {}
_ALIASES = {}
# imgrec's own tasks, imported (so registered) on the first lookup.
_BUILTIN = ("imgrec.tasks.image_classification",
            "imgrec.tasks.clip_classification",
            "imgrec.tasks.face_embedding",
            "imgrec.tasks.multilabel")


def _load_builtin():
  for module in _BUILTIN:
    importlib.import_module(module)


def register_task(name, *, aliases=()):
  """Returns a decorator that registers a `base.Task` subclass as `name`.

  Args:
    name: the task's name (recorded in run folders).
    aliases: other names that select it (short `--task` values, and the
      names runs of earlier versions recorded).

  Raises:
    ValueError: `name` or an alias is taken.
  """
  def decorator(cls):
    for key in (name, *aliases):
      if key in _TASKS or key in _ALIASES:
        raise ValueError(f"Task {key!r} is already registered (by "
                         f"{get_task(key).__module__}). Received: "
                         f"name={name!r}")
    cls.name, cls.aliases = name, tuple(aliases)
    _TASKS[name] = cls
    _ALIASES.update({alias: name for alias in aliases})
    return cls
  return decorator


def canonical_name(name):
  """The registered name of `name` or of an alias of it.

  Raises:
    ImgrecError: no task has that name.
  """
  _load_builtin()
  name = _ALIASES.get(name, name)
  if name not in _TASKS:
    raise ImgrecError(f"Unknown task {name!r}; known tasks: "
                      f"{', '.join(list_tasks())} (also "
                      f"{', '.join(sorted(_ALIASES))}).")
  return name


def get_task(name):
  """The task class registered as `name` (or an alias)."""
  return _TASKS[canonical_name(name)]


def list_tasks():
  """Sorted registered task names."""
  _load_builtin()
  return sorted(_TASKS)


def tasks():
  """The registered task classes, in name order."""
  return [_TASKS[name] for name in list_tasks()]


def find(predicate):
  """The first registered task class for which `predicate(cls)` holds, or
  None.

  Tasks registered so far are asked first, then imgrec's own modules are
  imported one at a time, only as far as the answer needs (which task
  takes a TFLite file's input is known without importing the others).
  """
  for module in (None, *_BUILTIN):
    if module is not None:
      importlib.import_module(module)
    for name in sorted(_TASKS):
      if predicate(_TASKS[name]):
        return _TASKS[name]
  return None
