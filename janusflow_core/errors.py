"""How the command-line entry points end when something goes wrong: one ``error: ...`` line, no traceback.

Every error a user can cause (a bad value, a missing or unreadable file, a truncated checkpoint, bad
JSON, an unavailable device, running out of memory) arrives here as one of ``EXPECTED`` and is printed
as one line on stderr with exit status 2. Anything else is a bug: it is printed as one line too, with
exit status 1 and a hint; ``JANUSFLOW_TRACEBACK=1`` lets it through with its traceback for debugging.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from safetensors import SafetensorError

# ValueError covers InputError, CheckpointError, JSONDecodeError and UnicodeDecodeError; OSError covers
# missing files, folders given as files, permissions and PIL's UnidentifiedImageError; RuntimeError
# covers torch's device and out-of-memory errors; ArithmeticError the sampler's FloatingPointError.
EXPECTED: tuple[type[BaseException], ...] = (ValueError, OSError, RuntimeError, ArithmeticError, MemoryError,
                                            SafetensorError)
EXIT_INPUT = 2  # the input (or the environment) was wrong: the message says what and what is allowed
EXIT_BUG = 1  # not expected: a bug to report


def user_message(exc: BaseException) -> str:
    """One line for ``exc``: OSErrors as ``path: reason``, others their message, newlines folded."""
    if isinstance(exc, MemoryError):
        text = "out of memory; try fewer images, a smaller batch, --dtype bf16 or a smaller model"
    elif isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, SafetensorError):
        text = f"unreadable safetensors file ({text})"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def run_guarded(func: Callable[[], int | None], stderr=None) -> int:
    """``func()``'s exit status, or 2 (expected error) / 1 (bug) / 130 (Ctrl-C) after one ``error:`` line."""
    stream = stderr or sys.stderr
    try:
        return func() or 0
    except KeyboardInterrupt:
        print("error: interrupted", file=stream)
        return 130
    except EXPECTED as exc:
        print(f"error: {user_message(exc)}", file=stream)
        return EXIT_INPUT
    except Exception as exc:
        if os.environ.get("JANUSFLOW_TRACEBACK") == "1":
            raise
        print(f"error: unexpected {type(exc).__name__}: {user_message(exc)} (this is a bug: please report it; "
              "JANUSFLOW_TRACEBACK=1 shows the traceback)", file=stream)
        return EXIT_BUG


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``error:`` line (exit 2) like every other refusal."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_INPUT)
