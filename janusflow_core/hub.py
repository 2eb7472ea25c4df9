"""Where model files come from: a local folder or a Hugging Face hub id."""

from __future__ import annotations

import re
from pathlib import Path

_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def is_hub_id(text: str) -> bool:
    """Whether ``text`` has the form of a hub id, ``owner/name`` (not a relative or absolute path)."""
    return bool(_REPO_ID.match(text)) and not text.startswith((".", "/", "~"))


def resolve_folder(path_or_id: str | Path, what: str = "model",
                   allow_patterns: list[str] | None = None) -> Path:
    """A local folder is used as is; ``owner/name`` is fetched (or found in the local cache) with
    huggingface_hub. Anything else, or a hub id that cannot be had offline, is a clear error."""
    p = Path(path_or_id).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise NotADirectoryError(f"{what} path {p} is a file; pass the folder that holds config.json "
                                 "and the .safetensors weights")
    text = str(path_or_id)
    if not is_hub_id(text):
        raise FileNotFoundError(f"{what} folder {text!r} does not exist (and it is not a hub id of the form "
                                "owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, allow_patterns=allow_patterns))
    except Exception as exc:  # offline, unknown repo, gated, network down: all end here
        raise FileNotFoundError(
            f"could not get the {what} {text!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            f"On a machine with internet run `hf download {text} --local-dir DIR` (or "
            f"`huggingface-cli download {text} --local-dir DIR`), copy DIR here and pass its path instead."
        ) from exc
