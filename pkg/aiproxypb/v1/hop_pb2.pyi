from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HopCalls(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[HopCall]
    def __init__(self, calls: _Optional[_Iterable[_Union[HopCall, _Mapping]]] = ...) -> None: ...

class HopCall(_message.Message):
    __slots__ = ("id", "cancel", "request", "metadata", "stream", "credit")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    id: int
    cancel: bool
    request: bytes
    metadata: _containers.ScalarMap[str, str]
    stream: bool
    credit: int
    def __init__(self, id: _Optional[int] = ..., cancel: _Optional[bool] = ..., request: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., stream: _Optional[bool] = ..., credit: _Optional[int] = ...) -> None: ...

class HopResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[HopResult]
    def __init__(self, results: _Optional[_Iterable[_Union[HopResult, _Mapping]]] = ...) -> None: ...

class HopResult(_message.Message):
    __slots__ = ("id", "code", "details", "response", "trailing_metadata", "more", "initial_metadata")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TRAILING_METADATA_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_METADATA_FIELD_NUMBER: _ClassVar[int]
    id: int
    code: int
    details: str
    response: bytes
    trailing_metadata: _containers.RepeatedCompositeFieldContainer[MetadataEntry]
    more: bool
    initial_metadata: _containers.RepeatedCompositeFieldContainer[MetadataEntry]
    def __init__(self, id: _Optional[int] = ..., code: _Optional[int] = ..., details: _Optional[str] = ..., response: _Optional[bytes] = ..., trailing_metadata: _Optional[_Iterable[_Union[MetadataEntry, _Mapping]]] = ..., more: _Optional[bool] = ..., initial_metadata: _Optional[_Iterable[_Union[MetadataEntry, _Mapping]]] = ...) -> None: ...

class MetadataEntry(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
