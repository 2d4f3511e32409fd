"""The reliability ledger's outcomes and how a test classifies what a user would see (docs/reliability.md)."""

from __future__ import annotations

from collections.abc import Callable

#: What happened to a bad input or fault (docs/reliability.md counts them; the goals are 0 for the last three).
OUTCOMES = ("clear error", "right answer", "silently wrong", "traceback", "escape")


def attempt(call: Callable[[], object], errors: tuple[type[BaseException], ...], *names: str) -> tuple[str, str]:
    """Run ``call`` and classify what a user would see: (outcome, message).

    'clear error' if it raised one of ``errors`` whose message contains every one of ``names`` (the file, the
    sample, the setting it is about); 'traceback' for any other exception or a message that names nothing;
    'silently wrong' if it returned normally.
    """
    try:
        call()
    except errors as exc:
        message = str(exc)
        missing = [n for n in names if n not in message]
        return ("traceback" if missing else "clear error"), message
    except Exception as exc:  # an unexpected exception reaches the user as a traceback
        return "traceback", f"{type(exc).__name__}: {exc}"
    return "silently wrong", "no error"
