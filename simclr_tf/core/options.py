"""The options a part declares (a loss's temperature, an evaluator's bank size): each becomes a
``Config`` field and a flag of the programs, with its default, help text and check.

Free of TensorFlow: the programs build their flags and ``--help`` from the declarations before
TensorFlow loads.
"""

import dataclasses
from typing import Any, Callable, Optional


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting of a part.

    ``name`` is the flag's (``--name``) and the Config field's; its type is the default's
    (bool, int, float or str). ``check(value)`` raises ValueError naming ``--name=value`` and
    what is accepted. With ``exclusive``, a value other than the default is refused when the
    run's part of this kind does not declare the option (``--semi_hard_negatives`` with NT-Xent);
    otherwise such a value is accepted and unused (``--temperature`` with the margin triplet
    loss, so that one flagfile serves every cell of a study).
    """

    name: str
    default: Any
    help: str
    check: Optional[Callable[[Any], None]] = None
    exclusive: bool = False

    @property
    def type(self) -> type:
        return type(self.default)


def positive(name: str) -> Callable[[Any], None]:
    """A check that ``--name`` is > 0."""
    def check(value):
        if not value > 0:
            raise ValueError(f"--{name}={value} must be > 0.")
    return check


def at_least(name: str, minimum) -> Callable[[Any], None]:
    """A check that ``--name`` is >= ``minimum``."""
    def check(value):
        if value < minimum:
            raise ValueError(f"--{name}={value} must be >= {minimum}.")
    return check
