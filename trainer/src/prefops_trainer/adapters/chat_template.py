"""A time limit on rendering a tokenizer's chat template.

A chat template is a Jinja program that comes with the model (``chat_template.jinja``, or ``chat_template`` in
``tokenizer_config.json``); transformers renders it in a sandbox, which stops file and attribute access but not a loop
(two nested ``range(100000)`` loops render for hours). :func:`bound` gives the tokenizer's ``apply_chat_template`` a
limit of :data:`RENDER_SECONDS` per call: a render that overruns it is stopped by a timer signal and the phase exits 2
(:class:`SourceError`) naming the template's file. The timer works in a process's main thread, where TRL's and our
tokenization runs (``dataset_num_proc`` is unset); a call from another thread renders without a limit.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import SourceError

if TYPE_CHECKING:
    from collections.abc import Callable

    from transformers import PreTrainedTokenizerBase

#: The longest one render may take; an ordinary template renders a conversation in milliseconds.
RENDER_SECONDS = 10.0


class _Overrun(BaseException):
    """Raised by the timer inside a render; no library's ``except Exception`` catches it on its way out."""


def _overrun(signum: int, frame: Any) -> None:
    raise _Overrun


class BoundedChatTemplate:
    """``apply_chat_template`` of one tokenizer, stopped after ``seconds`` (a class, not a closure: datasets pickles
    the tokenizer to fingerprint a map)."""

    def __init__(self, render: Callable[..., Any], where: str, seconds: float) -> None:
        self.render, self.where, self.seconds = render, where, seconds

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return self.render(*args, **kwargs)
        previous = signal.signal(signal.SIGALRM, _overrun)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        try:
            return self.render(*args, **kwargs)
        except _Overrun:
            raise SourceError(
                f"{self.where}: the tokenizer's chat template took more than {self.seconds:g} s to render one "
                "conversation and was stopped; a template that loops or grows without end is refused. Fix the chat "
                "template (or use a model whose template renders), then run the job again"
            ) from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def template_file(model: Path) -> Path:
    """Where the chat template of the tokenizer saved in ``model`` is written."""
    own = model / "chat_template.jinja"
    return own if own.is_file() else model / "tokenizer_config.json"


def bound(tok: PreTrainedTokenizerBase, model: Path, seconds: float = RENDER_SECONDS) -> None:
    """Give ``tok`` (loaded from ``model``) a time limit per chat-template render."""
    tok.apply_chat_template = BoundedChatTemplate(tok.apply_chat_template, str(template_file(model)), seconds)  # type: ignore[method-assign]
