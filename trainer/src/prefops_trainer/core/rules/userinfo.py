"""Credentials written into a URI (``s3://KEY:SECRET@bucket``, ``hf://user:token@org/name``), typo'd forms included
(``s3:///KEY:SECRET@b``, ``s3:/KEY:SECRET@b``): found in a value, and hidden in any text that echoes values (a
message, a condition, an Event, a log line). Pure and standard-library only: the operator holds a generated copy
(``scripts/gen_shared_copies.py``), so both sides hide the same text.

User information is what follows a scheme, its ``:`` and any number of ``/``, up to an ``@``, when it holds no
``/`` (``KEY@``, ``KEY:SECRET@``) or holds a ``:`` before its first ``/`` (``KEY:SE/CRET@``: an AWS secret key may
hold ``/``). An ``@`` after a path segment (``hf://org/name@revision``) is not user information.
"""

from __future__ import annotations

import re

#: what replaces the user information in echoed text
HIDDEN = "***"
_USERINFO = r"""(?P<userinfo>[^\s"'@/:]*:[^\s"'@]*|[^\s"'@/]+)@"""
_SCHEME = r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*:/*)"
_FOUND = re.compile(_SCHEME + _USERINFO)
_VALUE = re.compile(r"\s*" + _SCHEME + _USERINFO)


def carries_userinfo(value: str) -> bool:
    """Whether ``value`` is a URI (however mistyped) with user information before its host."""
    return _VALUE.match(value) is not None


def redact(text: str) -> str:
    """``text`` with the user information of every URI in it replaced by :data:`HIDDEN`
    (``s3://KEY:SECRET@bucket/m`` → ``s3://***@bucket/m``)."""
    return _FOUND.sub(lambda m: f"{m.group('scheme')}{HIDDEN}@", text)
