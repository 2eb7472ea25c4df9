"""The ``deepseek_old`` chat template JanusFlow was trained with (SPEC 4.1 and 5.1).

Rendering: the system text plus two newlines (nothing when it is empty); then per message
``ROLE + ": " + content.strip() + sep`` with roles ``User`` / ``Assistant`` and sep two newlines after
a user turn, ``<｜end▁of▁sentence｜>`` after an assistant turn; an empty content renders ``ROLE + ":"``
alone. The whole string is stripped. ``add_generation_prompt`` appends an empty assistant turn, so the
prompt ends with ``Assistant:``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

SFT_FORMAT = "deepseek_old"

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)

EOS_TEXT = "<｜end▁of▁sentence｜>"
ROLE_NAMES = {"user": "User", "assistant": "Assistant"}
SEPARATORS = {"user": "\n\n", "assistant": EOS_TEXT}


def _check_messages(messages: Sequence[Mapping]) -> None:
    if isinstance(messages, (str, Mapping)):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise TypeError(f"message {i} must be a dict with 'role' and 'content', got {type(msg).__name__}")
        role = msg.get("role")
        if role not in ROLE_NAMES:
            raise ValueError(
                f"message {i} has role {role!r}; allowed roles are 'user' and 'assistant' "
                "(pass the system text as system_prompt)"
            )
        content = msg.get("content", "")
        if not isinstance(content, str):
            raise TypeError(f"message {i} content must be a str, got {type(content).__name__}")


def render_chat(
    messages: Sequence[Mapping],
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    add_generation_prompt: bool = True,
) -> str:
    """Render ``[{'role': 'user'|'assistant', 'content': str}, ...]`` with the deepseek_old template.

    Extra keys in a message (e.g. ``images``) are ignored here; the processor handles them.
    """
    _check_messages(messages)
    turns = [(m["role"], m.get("content", "")) for m in messages]
    if add_generation_prompt:
        turns.append(("assistant", ""))
    # The official template picks the separator by turn index (even: "\n\n", odd: EOS), which equals
    # the per-role separator only when turns alternate; require that rather than mis-render.
    for i, (role, _) in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(
                f"turn {i} is {role!r} but {expected!r} was expected: conversations must start with a user "
                "message and alternate user/assistant (the generation prompt adds the final assistant turn)"
            )
    text = system_prompt + "\n\n" if system_prompt else ""
    for role, content in turns:
        content = content.strip()
        text += f"{ROLE_NAMES[role]}: {content}{SEPARATORS[role]}" if content else f"{ROLE_NAMES[role]}:"
    return text.strip()


def render_generation_prompt(prompt: str) -> str:
    """Text-to-image prompt: empty system text, ``User: {prompt}\\n\\nAssistant:`` (SPEC 5.1)."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    return render_chat([{"role": "user", "content": prompt}], system_prompt="", add_generation_prompt=True)
