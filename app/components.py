"""User-facing refusals, and input components whose own refusals name the field.

Gradio checks slider bounds, number bounds, radio choices and upload types itself, before a handler
runs, with messages such as "Value 500 is greater than maximum value 50." that do not say which field
was wrong, and it prints a traceback for each. ``labelled`` wraps one component's check so that the
message starts with the component's label ("Steps: Value 500 ...") and no traceback is printed. (A
subclass would do the same, but gradio writes a ``.pyi`` stub beside any module that subclasses a
component, at import time.)
"""

from __future__ import annotations

from typing import Any, TypeVar

import gradio as gr

C = TypeVar("C", bound=gr.components.Component)


def refuse(message: str) -> gr.Error:
    """A user-facing error (shown in the UI, returned to API clients), without a console traceback."""
    return gr.Error(message, print_exception=False)


def labelled(component: C) -> C:
    check = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return check(payload)
        except gr.Error as exc:
            raise refuse(f"{component.label}: {exc.message}") from None

    component.preprocess = preprocess  # type: ignore[method-assign]
    return component
