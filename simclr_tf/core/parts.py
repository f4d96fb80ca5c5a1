"""Parts found by name: a run's contrastive loss (``--loss=nt_xent``) is the module
``simclr_tf.losses.nt_xent`` and its evaluators (``--evaluators=probe,knn``) the modules
``simclr_tf.evaluators.probe`` and ``.knn``, as big_vision finds ``models.<name>`` by the
string in its config.

A kind of part is a package whose modules are its built-in parts (helpers start with ``_``);
a part is a module (or any object) with the kind's function and, optionally, ``OPTIONS``
(``options.Option``: each a Config field and a flag). A user's own part, without editing the
package, is either

- a module path: ``--loss=my_project.my_loss`` imports that module (on ``sys.path``); or
- registered from Python (a notebook cell): ``parts.register("loss", "mine", obj)``, then
  ``Config(loss="mine")`` (or ``parts.register("evaluator", ...)``, then
  ``Config(evaluators="probe,mine")``).

This module imports the built-in parts by name (``importlib``) for their declarations only:
a part's top level is free of TensorFlow (``lazy.load``), so flags and ``--help`` need none.
A user's part may import what it likes; its own ``OPTIONS`` are not flags: it runs with
their defaults (set them in its code).
"""

import dataclasses
import functools
import importlib
import pkgutil
from typing import Dict, List, Tuple

from simclr_tf.core import options as options_lib


@dataclasses.dataclass(frozen=True)
class Kind:
    """A kind of part: its flag, its package of built-in parts, the function a part of it
    defines, and whether a run names several (a comma-separated list) or one."""

    flag: str
    package: str
    function: str
    many: bool = False


KINDS = {"loss": Kind("loss", "simclr_tf.losses", "loss"),
         "evaluator": Kind("evaluators", "simclr_tf.evaluators", "evaluator", many=True)}
_REGISTERED: Dict[str, Dict[str, object]] = {kind: {} for kind in KINDS}


@functools.lru_cache(maxsize=None)  # the package's files: read once per process
def built_in(kind: str) -> Tuple[str, ...]:
    """The built-in parts of ``kind``: the package's ``ORDER`` first, then the rest by name."""
    package = importlib.import_module(KINDS[kind].package)
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                   if not m.name.startswith("_"))
    first = [n for n in getattr(package, "ORDER", ()) if n in names]
    return tuple(first + [n for n in names if n not in first])


def register(kind: str, name: str, part) -> None:
    """Makes ``part`` (a module or an object with the kind's function) the part ``name``."""
    _check_shape(kind, name, part)
    if name in built_in(kind):
        raise ValueError(f"{name!r} is a built-in {kind}; register yours under another name.")
    _REGISTERED[kind][name] = part


def names(kind: str) -> Tuple[str, ...]:
    """Every part of ``kind`` a run may name without a module path."""
    return built_in(kind) + tuple(n for n in _REGISTERED[kind] if n not in built_in(kind))


def find(kind: str, name: str, flag: bool = True):
    """The part ``name`` of ``kind``: registered, built in, or a module path with a dot.
    Raises ValueError, in one line, naming the bad name and what would be accepted."""
    spec = KINDS[kind]
    label = f"--{spec.flag}" if flag else spec.flag
    if not isinstance(name, str) or not name:
        raise ValueError(f"{label}={name!r} is not supported; use one of "
                         f"{', '.join(names(kind))}.")
    if name in _REGISTERED[kind]:
        return _REGISTERED[kind][name]
    if name in built_in(kind):
        return importlib.import_module(f"{spec.package}.{name}")
    if "." not in name:
        raise ValueError(f"{label}={name!r} is not supported; use one of "
                         f"{', '.join(names(kind))}, or a module path (my_project.my_{kind}) "
                         f"whose module defines {spec.function}().")
    try:
        part = importlib.import_module(name)
    except ImportError as e:
        raise ValueError(f"{label}={name!r}: no module of that path can be imported ({e}); "
                         f"use one of {', '.join(names(kind))} or a module on sys.path.") from None
    _check_shape(kind, name, part, label)
    return part


def _check_shape(kind: str, name: str, part, label: str = "") -> None:
    function = KINDS[kind].function
    if not callable(getattr(part, function, None)):
        where = f"{label}={name!r}: " if label else f"{kind} {name!r}: "
        raise ValueError(f"{where}{part!r} defines no {function}() function, which a {kind} "
                         "needs (docs/extending.md).")


def declared(part) -> Tuple[options_lib.Option, ...]:
    return tuple(getattr(part, "OPTIONS", ()))


@functools.lru_cache(maxsize=None)  # built in: the same declarations for the whole process
def built_in_options(kind: str) -> Dict[str, Tuple[options_lib.Option, List[str]]]:
    """Every option the built-in parts of ``kind`` declare: name -> (the option, the parts
    that declare it). Two parts declaring one name must agree on its default."""
    found: Dict[str, Tuple[options_lib.Option, List[str]]] = {}
    for name in built_in(kind):
        for option in declared(find(kind, name)):
            if option.name in found and found[option.name][0].default != option.default:
                first = found[option.name][1][0]
                raise ValueError(f"{kind}s {first} and {name} declare --{option.name} with "
                                 f"other defaults ({found[option.name][0].default!r}, "
                                 f"{option.default!r}).")
            found.setdefault(option.name, (option, []))[1].append(name)
    return found


def chosen(kind: str, value: str) -> Tuple[str, ...]:
    """The names a run's flag value chooses: one, or (a kind of which a run names several)
    the comma-separated list, in order, without blanks. Raises ValueError, in one line, on a
    name given twice."""
    if not KINDS[kind].many:
        return (value,)
    picked = tuple(n.strip() for n in str(value).split(",") if n.strip())
    twice = sorted({n for n in picked if picked.count(n) > 1})
    if twice:
        raise ValueError(f"--{KINDS[kind].flag}={value!r} names {', '.join(twice)} twice; "
                         "name each once.")
    return picked


def check(kind: str, value: str, values: Dict[str, object]) -> None:
    """Checks a run's choice of ``kind`` (its flag's ``value``) against its option
    ``values``: each chosen part exists, every declared option passes its check, and an
    exclusive option away from its default is taken by a chosen part."""
    picked = chosen(kind, value)
    taken = {o.name for name in picked for o in declared(find(kind, name))}
    for name, (option, parts_of) in built_in_options(kind).items():
        given = values[name]
        if option.check is not None:
            option.check(given)
        if option.exclusive and name not in taken and given != option.default:
            raise ValueError(f"--{name} applies to --{KINDS[kind].flag}="
                             f"{' or '.join(parts_of)}; --{KINDS[kind].flag}={value} does "
                             "not take it.")


def values_for(part, settings) -> Dict[str, object]:
    """The values of the options ``part`` declares, read from ``settings`` (a Config) where it
    has them, else the option's default."""
    return {o.name: getattr(settings, o.name, o.default) for o in declared(part)}
