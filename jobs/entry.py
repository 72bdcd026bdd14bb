"""How every job's `main()` ends: one line on stderr and an exit code for what the user can fix, a traceback for
what they cannot. Not here: parsing arguments or loading configs (each job's own main)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from nla.errors import NLAError


class JobInterrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM on the driver: what was committed stays, the rest is left for a rerun."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NothingDone(Exception):
    """The run committed nothing that was asked of it (every shard empty, every AV batch failed)."""


def nla_message(e: BaseException) -> str | None:
    """The message of the NLAError behind an exception: itself or one in its cause chain; or, when Ray passed it on
    as text only (an actor's constructor, a Ray Train worker), the last `nla.errors.X: ...` line of the text, with
    the line that holds its "Fix:" when that came on a line of its own. None when no NLAError is behind it."""
    x: BaseException | None = e
    seen: set[int] = set()
    while x is not None and id(x) not in seen:
        if isinstance(x, NLAError):
            return str(x)
        seen.add(id(x))
        x = getattr(x, "cause", None) or x.__cause__
    lines = str(e).splitlines()
    at = [i for i, ln in enumerate(lines) if ln.lstrip().startswith("nla.errors.")]
    if not at:
        return None
    message = lines[at[-1]].split(": ", 1)[-1].strip()
    if "Fix:" not in message:
        fix = next((ln.strip() for ln in lines[at[-1] + 1:] if "Fix:" in ln), None)
        message = f"{message} {fix}" if fix else message
    return message


def run_main(body: Callable[[], object]) -> int:
    """Run a job's body: 0 when it returns; 130/143 with its one line when interrupted; 1 when it did nothing of what
    was asked; 2 with one line for an NLAError, even one Ray wrapped; anything else propagates as a traceback."""
    try:
        body()
    except JobInterrupted as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    except NothingDone as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - bad input (also when an actor or worker hit it) is one line
        message = nla_message(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0
