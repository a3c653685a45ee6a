"""Lossless JSON <-> protobuf for the OpenAI-shaped messages of chat.proto.

The conventions (documented in common.proto) make one generic converter serve every message:
  * a JSON key is the proto field of the same name;
  * `extra_json` collects every key the typed fields cannot hold exactly (unknown keys, nulls,
    values of another type), so a body survives the trip unchanged;
  * a string field `<key>_json` holds the arbitrary JSON value of `<key>`;
  * a oneof `<key>` is a JSON union: its string / list-wrapper / message / NullValue member is
    picked by the JSON value's type.
A value is stored typed only when it converts back to exactly the same JSON; otherwise it
travels in `extra_json` (so do empty arrays and objects, which proto cannot tell from absent). Doubles holding whole numbers are emitted as JSON integers, as
protojson does (JSON itself does not tell 1 from 1.0).

Plans are compiled once per message type, so a conversion is a few dict lookups per key: plans
are keyed by descriptor objects (not names) and type checks are chosen once per field, because
every REST call converts each request, response and stream chunk twice (facade and servicer).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from aiproxy.errors import InvalidRequest

_T = FieldDescriptor
_INT_TYPES = {_T.TYPE_INT64, _T.TYPE_INT32, _T.TYPE_UINT32, _T.TYPE_UINT64, _T.TYPE_SINT64, _T.TYPE_SINT32}
_FLOAT_TYPES = {_T.TYPE_DOUBLE, _T.TYPE_FLOAT}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_NULL_VALUE = "google.protobuf.NullValue"
_UNION_KINDS = {str: "str", list: "list", dict: "dict"}
EXTRA = "extra_json"


def _is_repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def _is_map(field: FieldDescriptor) -> bool:
    return (
        _is_repeated(field)
        and field.type == _T.TYPE_MESSAGE
        and field.message_type.GetOptions().map_entry
    )


def _list_wrapper_field(desc: Descriptor) -> FieldDescriptor | None:
    """A message with exactly one repeated non-map field is a JSON array in a oneof."""
    if len(desc.fields) == 1 and _is_repeated(desc.fields[0]) and not _is_map(desc.fields[0]):
        return desc.fields[0]
    return None


# --- JSON -> proto -------------------------------------------------------------------------

_MISMATCH = object()


class JSONTooDeep(InvalidRequest):
    """orjson reads 1024 levels of nesting but writes only 254: a request it parsed may not be
    writable (into extra_json here, or, wrapped by the gateway or a translation, to the upstream).
    That is the client's error (400) wherever it shows; an upstream answer too deep to relay is
    turned into a bad upstream response by its caller."""

    def __init__(self) -> None:
        super().__init__("The request nests arrays or objects more than 254 levels deep; send a flatter body.")


def dump_parsed(value: Any) -> bytes:
    """orjson.dumps for JSON that was parsed (a request, an upstream body): the only way it fails is
    nesting, as JSONTooDeep."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise JSONTooDeep from None


_MAX_DEPTH = 254  # levels of arrays and objects orjson writes


def _dumps(value: Any, depth: int) -> str:
    """The JSON text of a value that `depth` arrays or objects enclose in the body, which must stay
    writable whole (the facade writes an answer, the provider a request): written alone, a value
    nested 200 levels inside a choice's message passed, and the facade failed on the answer (a 500,
    or an HTTP stream cut by one). Only a text with enough brackets to be that deep is written again,
    inside `depth` arrays, to find out."""
    text = dump_parsed(value)
    if depth and len(text) > 2 * (_MAX_DEPTH - depth) and text.count(b"[") + text.count(b"{") > _MAX_DEPTH - depth:
        for _ in range(depth):
            value = [value]
        dump_parsed(value)
    return text.decode()


def _scalar_check(field: FieldDescriptor):
    """A predicate: does a JSON value fit this scalar field exactly?"""
    t = field.type
    if t == _T.TYPE_STRING:
        return lambda value: type(value) is str
    if t == _T.TYPE_BOOL:
        return lambda value: type(value) is bool
    if t in _INT_TYPES:
        return lambda value: type(value) is int and _INT64_MIN <= value <= _INT64_MAX
    if t in _FLOAT_TYPES:
        return lambda value: type(value) is float or (type(value) is int and abs(value) < 2**53)
    return lambda value: False


class _Plan:
    """Per-message-type conversion plan: JSON key -> setter."""

    __slots__ = ("desc", "has_extra", "setters", "getters", "emitters")

    def __init__(self, desc: Descriptor) -> None:
        self.desc = desc
        self.has_extra = EXTRA in desc.fields_by_name
        self.setters: dict[str, Any] = {}
        self.getters: dict[str, tuple[str, Any]] = {}  # proto field name -> (json key, emitter)
        self.emitters: dict[FieldDescriptor, tuple[str, Any]] = {}  # the same, keyed as ListFields() answers
        for field in desc.fields:
            if field.name == EXTRA:
                continue
            oneof = field.containing_oneof
            if oneof is not None and not oneof.name.startswith("_"):
                continue  # union members are handled per oneof below
            key = field.name[: -len("_json")] if field.name.endswith("_json") else field.name
            self.setters[key] = _field_setter(field)
            self.getters[field.name] = (key, _field_emitter(field))
        for oneof in desc.oneofs:
            if oneof.name.startswith("_"):  # synthetic oneof of a proto3 `optional` field
                continue
            self.setters[oneof.name] = _union_setter(oneof)
            for member in oneof.fields:
                self.getters[member.name] = (oneof.name, _union_emitter(member))
        self.emitters = {field: self.getters[field.name] for field in desc.fields if field.name in self.getters}


_PLANS: dict[Descriptor, _Plan] = {}


def _plan(desc: Descriptor) -> _Plan:
    plan = _PLANS.get(desc)
    if plan is None:
        plan = _PLANS[desc] = _Plan(desc)
    return plan


def _field_setter(field: FieldDescriptor):
    name = field.name
    if name.endswith("_json") and field.type == _T.TYPE_STRING:

        def set_json(msg, value, depth):
            if value is None:  # null stays in extra_json: a typed "null" would read as a value
                return False
            setattr(msg, name, _dumps(value, depth + 1))
            return True

        return set_json
    if _is_map(field):
        value_ok = _scalar_check(field.message_type.fields_by_name["value"])

        def set_map(msg, value, depth):
            if type(value) is not dict or not value or not all(value_ok(v) for v in value.values()):
                return False
            getattr(msg, name).update(value)
            return True

        return set_map
    if _is_repeated(field):
        if field.type == _T.TYPE_MESSAGE:
            sub = field.message_type

            def set_messages(msg, value, depth):
                if type(value) is not list or not value or not all(type(v) is dict for v in value):
                    return False
                container = getattr(msg, name)
                plan = _plan(sub)
                for item in value:
                    if not _fill(container.add(), item, plan, depth + 2):
                        raise ValueError(f"{sub.name} has no extra_json to keep unknown keys")
                return True

            return set_messages

        item_ok = _scalar_check(field)

        def set_scalars(msg, value, depth):
            if type(value) is not list or not value or not all(item_ok(v) for v in value):
                return False
            getattr(msg, name).extend(value)
            return True

        return set_scalars
    if field.type == _T.TYPE_MESSAGE:
        sub = field.message_type

        def set_message(msg, value, depth):
            if type(value) is not dict:
                return False
            child = getattr(msg, name)
            child.SetInParent()
            return _fill(child, value, _plan(sub), depth + 1)

        return set_message

    value_ok = _scalar_check(field)

    def set_scalar(msg, value, depth):
        if not value_ok(value):
            return False
        setattr(msg, name, value)
        return True

    return set_scalar


def _union_setter(oneof):
    by_kind: dict[str, FieldDescriptor] = {}
    for member in oneof.fields:
        if member.type == _T.TYPE_STRING:
            by_kind["str"] = member
        elif member.type == _T.TYPE_ENUM and member.enum_type.full_name == _NULL_VALUE:
            by_kind["null"] = member
        elif member.type == _T.TYPE_MESSAGE:
            by_kind["list" if _list_wrapper_field(member.message_type) else "dict"] = member
    set_list = _field_setter(_list_wrapper_field(by_kind["list"].message_type)) if "list" in by_kind else None

    def set_union(msg, value, depth):
        kind = "null" if value is None else _UNION_KINDS.get(type(value))
        member = by_kind.get(kind)
        if member is None:
            return False
        if kind == "str":
            setattr(msg, member.name, value)
            return True
        if kind == "null":
            setattr(msg, member.name, 0)
            return True
        child = getattr(msg, member.name)
        if kind == "list":
            child.SetInParent()
            return set_list(child, value, depth)
        child.SetInParent()
        return _fill(child, value, _plan(member.message_type), depth + 1)

    return set_union


def _fill(msg: Message, data: dict, plan: _Plan, depth: int) -> bool:
    """Fill msg from data, which `depth` arrays or objects enclose in the body; False when data has
    keys msg cannot keep and it has no extra_json."""
    extra = None
    setters = plan.setters
    for key, value in data.items():
        setter = setters.get(key)
        if setter is not None:
            # Setters refuse None unless a union has a NullValue member (content: null stays typed).
            if setter(msg, value, depth):
                continue
            if type(value) is dict or type(value) is list:
                # A failed setter may have written part of an object or array: clear it before keeping it raw.
                _clear_key(msg, plan, key)
        if not plan.has_extra:
            return False
        if extra is None:
            extra = {}
        extra[key] = value
    if extra:
        setattr(msg, EXTRA, _dumps(extra, depth))
    return True


def _clear_key(msg: Message, plan: _Plan, key: str) -> None:
    for field_name, (json_key, _) in plan.getters.items():
        if json_key == key:
            msg.ClearField(field_name)


def json_to_message(data: dict, cls: type[Message]) -> Message:
    """Convert an OpenAI-shaped JSON object to a message of type cls, losslessly."""
    msg = cls()
    if not _fill(msg, data, _plan(cls.DESCRIPTOR), 0):
        raise ValueError(f"{cls.DESCRIPTOR.name} has no extra_json to keep unknown keys")
    return msg


# --- integers JSON parsers do not agree on -----------------------------------------------

# Every integer outside [-2**63, 2**64) has 19 digits or more. Runs of digits are found by turning
# every digit into "0" and searching for nineteen of them: both in C, about 1 ns a byte, where the
# regex \d{19} took 12 ns (385 us for a 20 KB conversation, 45 times what parsing it costs).
_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19
_INT_RANGE = range(-(2**63), 2**64)


def integer_beyond_64_bits(raw: bytes) -> str | None:
    """The first integer orjson read as a float because it does not fit 64 bits (it would reach the
    upstream changed: 123456789012345678901234567890 as 1.2345678901234568e+29), else None. Only a
    body with a run of 19 digits (a long number, or digits in a string) is parsed again to find out."""
    if _NINETEEN_DIGITS not in raw.translate(_DIGITS_AS_ZEROS):
        return None
    found: list[str] = []

    def check(text: str) -> int:
        if not found and (len(text) > 21 or int(text) not in _INT_RANGE):  # int() of a short text only
            found.append(text)
        return 0

    try:
        json.loads(raw, parse_int=check, strict=False)
    except (ValueError, RecursionError):  # what orjson took but the stdlib refuses: nesting too deep
        return None
    return found[0] if found else None


def integer_beyond_64_bits_in(msg: Message) -> str | None:
    """integer_beyond_64_bits() for the JSON text a message carries (extra_json, the *_json fields),
    which a gRPC client writes itself. Only a message with a run of 19 digits is looked into."""
    if _NINETEEN_DIGITS not in msg.SerializeToString().translate(_DIGITS_AS_ZEROS):
        return None
    return next(filter(None, map(integer_beyond_64_bits, _json_texts(msg))), None)


def _json_texts(msg: Message) -> Iterator[bytes]:
    for field, value in msg.ListFields():
        if field.type == _T.TYPE_STRING and field.name.endswith("_json"):
            yield value.encode()
        elif field.type == _T.TYPE_MESSAGE and not _is_map(field):
            for item in value if _is_repeated(field) else (value,):
                yield from _json_texts(item)


# --- proto -> JSON -------------------------------------------------------------------------


class NonFiniteNumber(ValueError):
    """A double holding NaN or ±Infinity, which JSON cannot express (a gRPC client can send them);
    `param` is the JSON key that held it."""

    def __init__(self, value: float) -> None:
        super().__init__(f"{value} is not a JSON number")
        self.param: str | None = None


class KeyInTwoPlaces(ValueError):
    """A key both a typed field and extra_json hold (a gRPC client can write both): which one the
    client meant is unknown. `param` is the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"'{key}' is set both as a typed field and in extra_json")
        self.param = key


def _number(value: float) -> int | float:
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    if value - value != 0:  # NaN and ±Infinity only; checked after the common whole-number case
        raise NonFiniteNumber(value)
    return value


def _field_emitter(field: FieldDescriptor):
    if field.name.endswith("_json") and field.type == _T.TYPE_STRING:
        return lambda value: orjson.loads(value)
    if _is_map(field):
        value_field = field.message_type.fields_by_name["value"]
        if value_field.type in _FLOAT_TYPES:
            return lambda value: {k: _number(v) for k, v in value.items()}
        return dict
    if _is_repeated(field):
        if field.type == _T.TYPE_MESSAGE:
            return lambda value: [message_to_json(item) for item in value]
        if field.type in _FLOAT_TYPES:
            return lambda value: [_number(v) for v in value]
        return list
    if field.type == _T.TYPE_MESSAGE:
        return message_to_json
    if field.type in _FLOAT_TYPES:
        return _number
    return None  # str, int, bool: as they are


def _union_emitter(member: FieldDescriptor):
    if member.type == _T.TYPE_ENUM:
        return lambda value: None
    if member.type == _T.TYPE_MESSAGE:
        inner = _list_wrapper_field(member.message_type)
        if inner is not None:
            emit_inner = _field_emitter(inner)
            name = inner.name
            return lambda value: (emit_inner or list)(getattr(value, name))
        return message_to_json
    return None


def message_to_json(msg: Message) -> dict:
    """Convert a message back to the JSON object it was made from."""
    emitters = _plan(msg.DESCRIPTOR).emitters
    out: dict[str, Any] = {}
    extra = None
    for field, value in msg.ListFields():
        entry = emitters.get(field)
        if entry is None:  # only extra_json has no emitter
            extra = value
            continue
        key, emit = entry
        try:
            out[key] = emit(value) if emit is not None else value
        except NonFiniteNumber as exc:
            exc.param = exc.param or key  # the innermost key names it
            raise
    if extra:
        keys = orjson.loads(extra)
        if not isinstance(keys, dict):
            raise ValueError("extra_json must hold a JSON object")
        if not out.keys().isdisjoint(keys):
            raise KeyInTwoPlaces(next(key for key in keys if key in out))
        out.update(keys)
    return out
