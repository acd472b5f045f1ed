"""How an event type of ``seda_dynamo.messages`` becomes the array the queues carry.

SEDA's queues between stages (Dynamo paper section 4.1's interface as it crosses them)
carry msgpack arrays ``[kind, *fields]``. ``kind`` gives a ``NamedTuple`` its kind and
three ways to and from that array: ``Type.wire(...)`` (the fields straight to the
array, for the hot path), ``message.to_wire()`` and ``Type.from_wire(array)`` (which
checks the kind and the number of fields). Pure, no IO.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from seda_dynamo.brief import brief

Event = list[Any]  # [kind, *fields]


class MessageError(ValueError):
    """An event whose kind or number of fields is not its type's."""


def kind(kind: str, trim: bool = False) -> Callable[[type], type]:
    """Give a type its kind, ``wire``, ``to_wire`` and ``from_wire``. ``trim``: the last
    field is left off the wire while it holds its default (as the stages have always
    sent it)."""

    def install(cls: Any) -> Any:
        fields = len(cls._fields)
        required = fields - len(cls._field_defaults)
        wire = _wire_function(kind, cls, trim)

        def to_wire(self: tuple[Any, ...]) -> Event:
            return wire(*self)

        def from_wire(klass: Any, event: Any) -> Any:
            if not isinstance(event, (list, tuple)) or not event or event[0] != kind:
                raise MessageError(f"not a {kind!r} event: {brief(event, 60)}")
            if not required <= len(event) - 1 <= fields:
                span = fields if required == fields else f"{required}..{fields}"
                raise MessageError(f"{kind!r} takes {span} fields, not {len(event) - 1}")
            return klass(*event[1:])

        cls.KIND = kind
        cls.wire = staticmethod(wire)
        cls.to_wire = to_wire
        cls.from_wire = classmethod(from_wire)
        return cls

    return install


def _wire_function(kind: str, cls: Any, trim: bool) -> Callable[..., Event]:
    """``cls.wire``: the event itself, built straight from the type's fields (same
    names, same defaults) with no object in between, for the hot path: a put's events
    cost 1-5% more built so than as list literals, 20-28% more as objects then
    ``to_wire`` (bench/bench_messages.py). Generated as ``collections.namedtuple`` makes its
    ``__new__``, from the type's own field names."""
    names = list(cls._fields)
    assert all(name.isidentifier() and not name.startswith("_") for name in names)
    event = f"[{kind!r}, {', '.join(names)}]" if names else f"[{kind!r}]"
    if trim:
        short = f"[{kind!r}, {', '.join(names[:-1])}]"
        event = f"{short} if {names[-1]} == _default else {event}"
    source = f"def wire({', '.join(names)}):\n    return {event}\n"
    namespace: dict[str, Any] = {"_default": cls._field_defaults.get(names[-1]) if trim
                                 else None}
    exec(source, namespace)  # noqa: S102 - text made above from identifiers only
    wire = namespace["wire"]
    defaults = tuple(cls._field_defaults[name] for name in names
                     if name in cls._field_defaults)
    wire.__defaults__ = defaults or None
    wire.__qualname__ = f"{cls.__name__}.wire"
    wire.__doc__ = f"The ``{kind}`` event of these fields, as the queues carry it."
    return wire
