"""How a study reports: one JSON line per result, printed and (``--out``) appended to a results file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(row: dict[str, Any], out: str | Path | None) -> None:
    """Print ``row`` as one JSON line, and append it to ``out`` when given (studies/results/*.jsonl)."""
    line = json.dumps(row)
    print(line, flush=True)
    if out:
        with Path(out).open("a") as f:
            f.write(line + "\n")
