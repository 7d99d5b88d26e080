"""Length caps on every string a request carries, checked before any work.

One walk over the request message (nested messages and repeated fields too),
so a new string field is capped the day it is added. A 100,000-character id
would otherwise be carried into lookups, logs, metrics and error messages.
"""
from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ..errors import InvalidArgument

MAX_STRING_CHARS = 256    # ids, layers, labels, methods, colormaps, options...
MAX_REPEATED_STRINGS = 4096  # entries of one repeated string field (layers, labels)
# Fields that are paths or names of files may be longer.
LONGER = {"source": 1024, "weights": 1024}


def check_strings(message: Message, prefix: str = "") -> None:
    """Raise InvalidArgument naming the first string field of `message` (at any
    depth) longer than its cap, or a repeated string field with too many
    entries. Field paths read like "layers[3]", "options.baseline",
    "request.model". Bytes fields (images, tensors) are not strings here: their
    size is bounded by the message limit and checked by the decoders."""
    for field, value in message.ListFields():
        name = prefix + field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            cap = LONGER.get(field.name, MAX_STRING_CHARS)
            if _is_repeated(field):
                if len(value) > MAX_REPEATED_STRINGS:
                    raise InvalidArgument(
                        f"{name} has {len(value)} entries; at most {MAX_REPEATED_STRINGS} are accepted",
                        reason="TOO_MANY_ENTRIES", field=name, metadata={"limit": str(MAX_REPEATED_STRINGS)})
                for i, text in enumerate(value):
                    _check(f"{name}[{i}]", text, cap)
            else:
                _check(name, value, cap)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                for key, item in value.items():  # map<string, ...>: keys and string values
                    _check(f"{name}[key]", str(key), MAX_STRING_CHARS)
                    if isinstance(item, Message):
                        check_strings(item, f"{name}[{str(key)[:32]!r}].")
                    elif isinstance(item, str):
                        _check(f"{name}[{str(key)[:32]!r}]", item, MAX_STRING_CHARS)
            elif _is_repeated(field):
                for i, item in enumerate(value):
                    check_strings(item, f"{name}[{i}].")
            else:
                check_strings(value, name + ".")


def _is_repeated(field: FieldDescriptor) -> bool:
    # `label` is deprecated in newer protobuf releases in favour of is_repeated.
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _check(name: str, text: str, cap: int) -> None:
    if len(text) > cap:
        raise InvalidArgument(f"{name} is {len(text)} characters long; at most {cap} are accepted",
                              reason="STRING_TOO_LONG", field=name, metadata={"limit": str(cap), "length": str(len(text))})
