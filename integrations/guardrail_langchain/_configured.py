"""Carrying settings and bindings over to the wrapped chat model.

A guarded model owns only its guard settings; everything else is the wrapped model's. Settings
given to the wrapper at construction (``temperature``, ``stop``, ``max_tokens``...) configure the
wrapped model as its own constructor would (:func:`configured`); runnables the wrapped model builds
over itself (``bind_tools``, ``with_structured_output``) are rebuilt over the wrapper
(:func:`rebound`), so the call goes through the guard with the wrapped model's own arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.runnables import Runnable
from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo


def configured(model: BaseChatModel, settings: Mapping[str, Any], wrapper: str) -> BaseChatModel:
    """A new ``model`` with ``settings`` on top of the settings it was built with, built by its own class.

    The model's constructor runs again, so its validators see the new settings as they would have
    at first (a client built at construction is built again, with the new timeout, say). A setting the model's class
    does not know is refused, unless the class takes extra settings (``extra="allow"`` or a
    ``model_kwargs`` field, as provider models have).

    Raises:
        ValueError: A setting is not one of the model's, or the model refuses its value.
    """
    cls = type(model)
    names = _names(cls)
    takes_extra = cls.model_config.get("extra") == "allow" or "model_kwargs" in cls.model_fields
    unknown = [key for key in settings if key not in names]
    if unknown and not takes_extra:
        shown = ", ".join(f"{key}={settings[key]!r}" for key in unknown)
        raise ValueError(
            f"{wrapper} got {shown}: not a setting of {wrapper}, and {cls.__name__} has no such field. "
            f"Set it on the {cls.__name__} you wrap, or per call: {wrapper}(...).bind({unknown[0]}=...)"
        )
    # Fields excluded from dumps are the model's workings (clients built from its settings), not settings:
    # the constructor builds them again from the new settings.
    given = {
        _init_name(name, field): getattr(model, name)
        for name, field in cls.model_fields.items()
        if name in model.model_fields_set and not field.exclude
    }
    for key, value in settings.items():
        name = names.get(key)
        given[_init_name(name, cls.model_fields[name]) if name is not None else key] = value
    try:
        return cls(**given)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{wrapper}: {cls.__name__} does not take {', '.join(settings)} as given: {exc}") from exc


def rebound(runnable: Runnable[Any, Any], old: BaseChatModel, new: BaseChatModel) -> Runnable[Any, Any]:
    """``runnable`` (built by ``old`` over itself) with ``new`` in place of ``old``, bindings and all.

    Raises:
        TypeError: ``old`` is nowhere in ``runnable``: a runnable of ``new`` would not call it.
    """
    found, count = _replaced(runnable, old, new)
    if not count:
        raise TypeError(
            f"{type(old).__name__} built a {type(runnable).__name__} that does not call the model itself; "
            f"{type(new).__name__} can only guard runnables that bind arguments to the wrapped model"
        )
    return found


def _replaced(value: Any, old: BaseChatModel, new: BaseChatModel) -> tuple[Any, int]:
    """``value`` with every ``old`` in it replaced, and how many were (copies only what changes)."""
    if value is old:
        return new, 1
    if isinstance(value, (list, tuple)):
        items = [_replaced(item, old, new) for item in value]
        count = sum(n for _, n in items)
        return (type(value)(item for item, _ in items) if count else value), count
    if isinstance(value, Mapping):
        pairs = {key: _replaced(item, old, new) for key, item in value.items()}
        count = sum(n for _, n in pairs.values())
        return ({key: item for key, (item, _) in pairs.items()} if count else value), count
    # Runnables that compose others are pydantic models holding them in fields (sequences, maps,
    # bindings, fallbacks); another language model is a leaf: its insides are its own.
    if not isinstance(value, Runnable) or not isinstance(value, BaseModel) or isinstance(value, BaseLanguageModel):
        return value, 0
    updates, count = {}, 0
    for name in type(value).model_fields:
        item, n = _replaced(getattr(value, name), old, new)
        if n:
            updates[name], count = item, count + n
    return (value.model_copy(update=updates) if count else value), count


def _names(cls: type[BaseModel]) -> dict[str, str]:
    """Every name a model's constructor takes for a field (the field's name and its aliases) -> the field."""
    names: dict[str, str] = {}
    for name, field in cls.model_fields.items():
        names[name] = name
        if field.alias:
            names[field.alias] = name
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        names.update({choice: name for choice in choices if isinstance(choice, str)})
    return names


def _init_name(name: str, field: FieldInfo) -> str:
    """The name to pass a field's value to the constructor by: its alias when it has one."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return field.alias or name
