"""User-facing refusals, and input components that refuse bad values with the core's words.

Values reach the handlers raw through the API (gradio_client sends whatever JSON it is given), so every
input is checked twice over: here, before gradio's own preprocessing, and again in the handlers (which
can be called directly). Gradio's own checks would otherwise answer a wrong value with messages that
name no field ("Value 500 is greater than maximum value 50.") and a wrong type with a generic
"verbose error reporting" message and a console traceback. ``checked`` puts a core check
(``janusflow_core.limits``) in front of one component's preprocessing and turns anything the component
still refuses into a refusal that starts with its label. (A subclass would do the same, but gradio
writes a ``.pyi`` stub beside any module that subclasses a component, at import time.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import gradio as gr
from pydantic import ValidationError

from janusflow_core.limits import InputError

from .engine import Engine, EngineError, Loaded

C = TypeVar("C", bound=gr.components.Component)
ERROR_SECONDS = 12  # how long a refusal stays on screen (a toast in the page's top corner)


def refuse(message: str) -> gr.Error:
    """A user-facing error (a toast in the UI, an AppError for API clients), without a console traceback."""
    return gr.Error(message, duration=ERROR_SECONDS, print_exception=False)


def loaded_or_refuse(engine: Engine) -> Loaded:
    """The engine's loaded pipelines (loading them on first use); a failed load is refused in its own words."""
    try:
        return engine.get()
    except EngineError as exc:
        raise refuse(str(exc)) from None


@contextmanager
def refusals() -> Iterator[None]:
    """Turn the core's InputError (a value the user gave is not allowed) into a refusal."""
    try:
        yield
    except InputError as exc:
        raise refuse(str(exc)) from None


class _CheckedModel:
    """A component's payload model whose validation failures are refusals naming the field."""

    def __init__(self, model: Any, label: str, expected: str):
        self._model, self._label, self._expected = model, label, expected

    def model_validate(self, payload: Any, **kwargs: Any) -> Any:
        try:
            return self._model.model_validate(payload, **kwargs)
        except ValidationError:
            shown = repr(payload) if len(repr(payload)) <= 40 else repr(payload)[:37] + "..."
            raise refuse(f"{self._label} must be {self._expected}; got {shown}") from None

    def __getattr__(self, name: str) -> Any:  # the JSON schema (API docs) and the rest stay the model's
        return getattr(self._model, name)


def checked(component: C, check: Callable[[Any], Any] | None = None, *, expected: str = "") -> C:
    """Refuse bad values for ``component`` with clear messages, before and during gradio's preprocessing.

    ``check`` takes the raw payload and returns it cleaned, or raises InputError (a core check such as
    ``check_number``). ``expected`` describes the payload's shape for components with a payload model
    (e.g. a MultimodalTextbox's ``{"text": ..., "files": [...]}``).
    """
    label = component.label or type(component).__name__
    original = component.preprocess
    if getattr(component, "data_model", None) is not None and expected:
        component.data_model = _CheckedModel(component.data_model, label, expected)  # type: ignore[assignment]

    def preprocess(payload: Any) -> Any:
        with refusals():
            if check is not None:
                payload = check(payload)
        try:
            return original(payload)
        except gr.Error as exc:
            raise refuse(f"{label}: {exc.message}") from None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise refuse(f"{label}: this value cannot be used ({exc})") from None

    component.preprocess = preprocess  # type: ignore[method-assign]
    return component
