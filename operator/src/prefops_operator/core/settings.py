"""Settings documented once, at the field (like kopf's settings dataclasses): a dataclass field made with
:func:`setting` carries its help text, command-line flag, environment name and validity rule in its metadata, and
the operator's argument parser and docs are built from those. Pure: no argparse here, only the data."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "PREFOPS_OPERATOR_"


@dataclass(frozen=True)
class Setting:
    """What a setting field declares besides its name and default.

    Attributes:
        help: one line for ``--help`` and the docs.
        flag: the command-line flag, e.g. ``--workers``.
        env: the environment variable that sets its default, without :data:`ENV_PREFIX` (``WORKERS``).
        choices: the values it may take, when a closed set.
        rule: a predicate every value must pass, and ``rule_text`` says it in words (``>= 1``).
    """

    help: str
    flag: str
    env: str
    choices: tuple[str, ...] | None = None
    rule: Callable[[Any], bool] | None = None
    rule_text: str = ""

    @property
    def env_name(self) -> str:
        return f"{ENV_PREFIX}{self.env}"

    def problem(self, value: Any) -> str | None:
        """``--flag: must be <rule>, got <value>`` when ``value`` breaks the rule; ``None`` when it is fine."""
        if self.rule is None or self.rule(value):
            return None
        return f"{self.flag}: must be {self.rule_text}, got {value!r}"


def setting(default: Any, help: str, flag: str, env: str, **extra: Any) -> Any:
    """A dataclass field that is an operator setting (see :class:`Setting` for ``extra``)."""
    return dataclasses.field(default=default, metadata={"setting": Setting(help, flag, env, **extra)})


def settings_of(cls: type) -> Iterator[tuple[tuple[str, ...], dataclasses.Field[Any], Setting]]:
    """``(attribute path, field, setting)`` of every setting of a settings dataclass, nested ones included
    (a field whose default is itself a settings dataclass, such as the children's settings in the config)."""
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("setting")
        if isinstance(meta, Setting):
            yield (f.name,), f, meta
        elif f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            for path, sub, sub_meta in settings_of(f.default_factory):
                yield (f.name, *path), sub, sub_meta
