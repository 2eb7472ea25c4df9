"""The one set of limits on what a user may ask for, and the checks that enforce them.

The pipelines, the CLI and the app all read these, so a value refused in one place is refused with
the same words everywhere. Each check raises :class:`InputError` (a ``ValueError``) whose message
names the field, the value given and what is allowed; entry points print it as one line (CLI) or
show it as a refusal (app, API).
"""

from __future__ import annotations

import math
from typing import Any

STEPS = (1, 100)  # Euler/Heun steps per image; the paper's demo uses 30
IMAGES = (1, 8)  # images per request
SEED = (0, 2**31 - 1)  # image k uses seed + k; kept exact as a JSON / browser number
GUIDANCE = (0.0, 10.0)  # CFG weight w; 1 is conditional only, 0 unconditional only
STRENGTH = (0.0, 1.0)  # image-to-image: 0 < S <= 1 (0 itself is refused: it would change nothing); 1 = text-to-image
SHIFT = (0.1, 10.0)  # SD3 time shift; 1 is the official uniform grid, beyond 10 nearly every step sits at the noise
GUIDANCE_INTERVAL = (0.0, 1.0)  # guidance only for steps whose start time t is in [LO, HI]
TEMPERATURE = (0.0, 2.0)  # 0 = greedy
TOP_P = (0.01, 1.0)
MAX_NEW_TOKENS = (1, 4096)
MAX_MESSAGE_CHARS = 4000  # one chat message or generation prompt, before tokenising (tokens are checked after)
MAX_IMAGES_PER_MESSAGE = 4
MAX_IMAGE_PIXELS = 50_000_000  # about 7000 x 7000; the model sees 384 x 384 anyway


class InputError(ValueError):
    """A value a user gave is not allowed; the message says what was wrong and what is allowed."""


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _bound(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def check_number(name: str, value: Any, bounds: tuple[float, float], *, integer: bool = False,
                 above_low: bool = False) -> float | int:
    """``value`` as a number within ``bounds`` (inclusive; ``above_low``: the low end excluded), else an
    InputError naming ``name``.

    Accepts ints, floats and numeric strings (as typed in a form or a JSON file); refuses bools,
    NaN, infinities and, with ``integer``, fractions.
    """
    low, high = bounds
    kind = "a whole number" if integer else "a number"
    allowed = (f"{kind} above {_bound(low)} and at most {_bound(high)}" if above_low
               else f"{kind} from {_bound(low)} to {_bound(high)}")
    if isinstance(value, bool) or value is None or (isinstance(value, str) and len(value) > 100):
        raise InputError(f"{name} must be {allowed}, got {_describe(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name} must be {allowed}, got {_describe(value)}") from None
    if math.isnan(number) or not low <= number <= high or (above_low and number == low):
        raise InputError(f"{name} must be {allowed}, got {_describe(value)}")
    if integer:
        if number != int(number):
            raise InputError(f"{name} must be {allowed}, got {_describe(value)}")
        if isinstance(value, int):
            return int(value)
        return int(number)
    return number


def check_choice(name: str, value: Any, choices: Any) -> str:
    """``value`` if it is one of ``choices`` (strings), else an InputError listing them."""
    options = list(choices)
    if not isinstance(value, str) or value not in options:
        raise InputError(f"{name} must be one of {', '.join(options)}; got {_describe(value)}")
    return value


def check_text(name: str, value: Any, max_chars: int = MAX_MESSAGE_CHARS) -> str:
    """``value`` if it is a string with some non-blank text and at most ``max_chars`` characters."""
    if not isinstance(value, str):
        raise InputError(f"{name} must be text, got {_describe(value)}")
    if not value.strip():
        raise InputError(f"{name} is empty; write some text")
    if len(value) > max_chars:
        raise InputError(f"{name} is {len(value)} characters long; the limit is {max_chars}")
    return value


def check_interval(name: str, value: Any, bounds: tuple[float, float] = GUIDANCE_INTERVAL) -> tuple[float, float]:
    """``value`` as a pair (LO, HI) of numbers with bounds[0] <= LO <= HI <= bounds[1], else an InputError."""
    allowed = f"two numbers LO HI with {_bound(bounds[0])} <= LO <= HI <= {_bound(bounds[1])}"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise InputError(f"{name} must be {allowed}, got {_describe(value)}")
    lo, hi = (check_number(f"{name} {end}", v, bounds) for end, v in zip(("LO", "HI"), value))
    if lo > hi:
        raise InputError(f"{name} must be {allowed}; got LO {lo:g} above HI {hi:g}")
    return float(lo), float(hi)
