from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateBundleRequest(_message.Message):
    __slots__ = ("since", "to", "include_raw")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RAW_FIELD_NUMBER: _ClassVar[int]
    since: str
    to: str
    include_raw: bool
    def __init__(self, since: _Optional[str] = ..., to: _Optional[str] = ..., include_raw: _Optional[bool] = ...) -> None: ...

class BundleInfo(_message.Message):
    __slots__ = ("file_name", "total_bytes", "sha256", "bundle_id", "files", "rows")
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    file_name: str
    total_bytes: int
    sha256: str
    bundle_id: str
    files: int
    rows: int
    def __init__(self, file_name: _Optional[str] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., bundle_id: _Optional[str] = ..., files: _Optional[int] = ..., rows: _Optional[int] = ...) -> None: ...

class BundleChunk(_message.Message):
    __slots__ = ("info", "data")
    INFO_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    info: BundleInfo
    data: bytes
    def __init__(self, info: _Optional[_Union[BundleInfo, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class BundleUploadStart(_message.Message):
    __slots__ = ("bundle_sha256", "total_bytes", "offset", "file_name")
    BUNDLE_SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    bundle_sha256: str
    total_bytes: int
    offset: int
    file_name: str
    def __init__(self, bundle_sha256: _Optional[str] = ..., total_bytes: _Optional[int] = ..., offset: _Optional[int] = ..., file_name: _Optional[str] = ...) -> None: ...

class BundleUploadChunk(_message.Message):
    __slots__ = ("start", "data")
    START_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    start: BundleUploadStart
    data: bytes
    def __init__(self, start: _Optional[_Union[BundleUploadStart, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ImportBundleResponse(_message.Message):
    __slots__ = ("complete", "received_bytes", "resumed_from", "bundle_id", "source_server_id", "rows_imported", "rows_skipped", "partitions", "new_partitions")
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_IMPORTED_FIELD_NUMBER: _ClassVar[int]
    ROWS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    NEW_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    complete: bool
    received_bytes: int
    resumed_from: int
    bundle_id: str
    source_server_id: str
    rows_imported: int
    rows_skipped: int
    partitions: int
    new_partitions: int
    def __init__(self, complete: _Optional[bool] = ..., received_bytes: _Optional[int] = ..., resumed_from: _Optional[int] = ..., bundle_id: _Optional[str] = ..., source_server_id: _Optional[str] = ..., rows_imported: _Optional[int] = ..., rows_skipped: _Optional[int] = ..., partitions: _Optional[int] = ..., new_partitions: _Optional[int] = ...) -> None: ...

class UploadOffsetRequest(_message.Message):
    __slots__ = ("bundle_sha256", "total_bytes")
    BUNDLE_SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    bundle_sha256: str
    total_bytes: int
    def __init__(self, bundle_sha256: _Optional[str] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class UploadOffsetResponse(_message.Message):
    __slots__ = ("offset",)
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    offset: int
    def __init__(self, offset: _Optional[int] = ...) -> None: ...

class LogFilter(_message.Message):
    __slots__ = ("since", "to", "model", "provider", "api_key_hash", "status_code", "dialog_id")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    API_KEY_HASH_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    DIALOG_ID_FIELD_NUMBER: _ClassVar[int]
    since: str
    to: str
    model: str
    provider: str
    api_key_hash: str
    status_code: int
    dialog_id: str
    def __init__(self, since: _Optional[str] = ..., to: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., api_key_hash: _Optional[str] = ..., status_code: _Optional[int] = ..., dialog_id: _Optional[str] = ...) -> None: ...

class SearchRequestsRequest(_message.Message):
    __slots__ = ("q", "filter", "limit", "cursor")
    Q_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    q: str
    filter: LogFilter
    limit: int
    cursor: str
    def __init__(self, q: _Optional[str] = ..., filter: _Optional[_Union[LogFilter, _Mapping]] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class RequestSummary(_message.Message):
    __slots__ = ("request_id", "server_id", "ts", "ts_unix", "endpoint", "model_original", "model_mapped", "provider", "transport", "stream", "status_code", "latency_ms", "ttft_ms", "api_key_hash", "dialog_id", "prompt_tokens", "completion_tokens", "total_tokens", "finish_reason", "score", "snippet")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    TS_UNIX_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ORIGINAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_MAPPED_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    API_KEY_HASH_FIELD_NUMBER: _ClassVar[int]
    DIALOG_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    server_id: str
    ts: str
    ts_unix: int
    endpoint: str
    model_original: str
    model_mapped: str
    provider: str
    transport: str
    stream: bool
    status_code: int
    latency_ms: float
    ttft_ms: float
    api_key_hash: str
    dialog_id: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    finish_reason: str
    score: float
    snippet: str
    def __init__(self, request_id: _Optional[str] = ..., server_id: _Optional[str] = ..., ts: _Optional[str] = ..., ts_unix: _Optional[int] = ..., endpoint: _Optional[str] = ..., model_original: _Optional[str] = ..., model_mapped: _Optional[str] = ..., provider: _Optional[str] = ..., transport: _Optional[str] = ..., stream: _Optional[bool] = ..., status_code: _Optional[int] = ..., latency_ms: _Optional[float] = ..., ttft_ms: _Optional[float] = ..., api_key_hash: _Optional[str] = ..., dialog_id: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., finish_reason: _Optional[str] = ..., score: _Optional[float] = ..., snippet: _Optional[str] = ...) -> None: ...

class SearchRequestsResponse(_message.Message):
    __slots__ = ("results", "next_cursor", "partitions_searched", "warnings")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_SEARCHED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RequestSummary]
    next_cursor: str
    partitions_searched: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, results: _Optional[_Iterable[_Union[RequestSummary, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., partitions_searched: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class GetRequestRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class RequestRecord(_message.Message):
    __slots__ = ("summary", "request_json", "response_json", "error_json", "dialog_parent_id")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_JSON_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_JSON_FIELD_NUMBER: _ClassVar[int]
    DIALOG_PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    summary: RequestSummary
    request_json: str
    response_json: str
    error_json: str
    dialog_parent_id: str
    def __init__(self, summary: _Optional[_Union[RequestSummary, _Mapping]] = ..., request_json: _Optional[str] = ..., response_json: _Optional[str] = ..., error_json: _Optional[str] = ..., dialog_parent_id: _Optional[str] = ...) -> None: ...

class ListDialogsRequest(_message.Message):
    __slots__ = ("filter", "limit", "cursor")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    filter: LogFilter
    limit: int
    cursor: str
    def __init__(self, filter: _Optional[_Union[LogFilter, _Mapping]] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class DialogSummary(_message.Message):
    __slots__ = ("dialog_id", "requests", "first_ts", "last_ts", "api_key_hash", "models", "first_request_id")
    DIALOG_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FIRST_TS_FIELD_NUMBER: _ClassVar[int]
    LAST_TS_FIELD_NUMBER: _ClassVar[int]
    API_KEY_HASH_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    FIRST_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    dialog_id: str
    requests: int
    first_ts: str
    last_ts: str
    api_key_hash: str
    models: _containers.RepeatedScalarFieldContainer[str]
    first_request_id: str
    def __init__(self, dialog_id: _Optional[str] = ..., requests: _Optional[int] = ..., first_ts: _Optional[str] = ..., last_ts: _Optional[str] = ..., api_key_hash: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., first_request_id: _Optional[str] = ...) -> None: ...

class ListDialogsResponse(_message.Message):
    __slots__ = ("dialogs", "next_cursor", "warnings")
    DIALOGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    dialogs: _containers.RepeatedCompositeFieldContainer[DialogSummary]
    next_cursor: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dialogs: _Optional[_Iterable[_Union[DialogSummary, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class GetDialogRequest(_message.Message):
    __slots__ = ("dialog_id", "limit", "cursor")
    DIALOG_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    dialog_id: str
    limit: int
    cursor: str
    def __init__(self, dialog_id: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class Dialog(_message.Message):
    __slots__ = ("summary", "turns", "next_cursor", "warnings")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    summary: DialogSummary
    turns: _containers.RepeatedCompositeFieldContainer[RequestRecord]
    next_cursor: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, summary: _Optional[_Union[DialogSummary, _Mapping]] = ..., turns: _Optional[_Iterable[_Union[RequestRecord, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("since", "to")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    since: str
    to: str
    def __init__(self, since: _Optional[str] = ..., to: _Optional[str] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("files_scanned", "files_ingested", "rows_inserted", "rows_skipped", "rows_filtered", "records_corrupt", "problems", "elapsed_s", "warnings")
    FILES_SCANNED_FIELD_NUMBER: _ClassVar[int]
    FILES_INGESTED_FIELD_NUMBER: _ClassVar[int]
    ROWS_INSERTED_FIELD_NUMBER: _ClassVar[int]
    ROWS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    ROWS_FILTERED_FIELD_NUMBER: _ClassVar[int]
    RECORDS_CORRUPT_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    files_scanned: int
    files_ingested: int
    rows_inserted: int
    rows_skipped: int
    rows_filtered: int
    records_corrupt: int
    problems: _containers.RepeatedScalarFieldContainer[str]
    elapsed_s: float
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, files_scanned: _Optional[int] = ..., files_ingested: _Optional[int] = ..., rows_inserted: _Optional[int] = ..., rows_skipped: _Optional[int] = ..., rows_filtered: _Optional[int] = ..., records_corrupt: _Optional[int] = ..., problems: _Optional[_Iterable[str]] = ..., elapsed_s: _Optional[float] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class BuildIndexRequest(_message.Message):
    __slots__ = ("action", "since", "to")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        BUILD: _ClassVar[BuildIndexRequest.Action]
        REBUILD: _ClassVar[BuildIndexRequest.Action]
        DROP: _ClassVar[BuildIndexRequest.Action]
    BUILD: BuildIndexRequest.Action
    REBUILD: BuildIndexRequest.Action
    DROP: BuildIndexRequest.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    action: BuildIndexRequest.Action
    since: str
    to: str
    def __init__(self, action: _Optional[_Union[BuildIndexRequest.Action, str]] = ..., since: _Optional[str] = ..., to: _Optional[str] = ...) -> None: ...

class PartitionIndexResult(_message.Message):
    __slots__ = ("path", "indexed", "skipped", "dropped")
    PATH_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    path: str
    indexed: int
    skipped: int
    dropped: bool
    def __init__(self, path: _Optional[str] = ..., indexed: _Optional[int] = ..., skipped: _Optional[int] = ..., dropped: _Optional[bool] = ...) -> None: ...

class BuildIndexResponse(_message.Message):
    __slots__ = ("partitions", "warnings")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionIndexResult]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, partitions: _Optional[_Iterable[_Union[PartitionIndexResult, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("since", "to")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    since: str
    to: str
    def __init__(self, since: _Optional[str] = ..., to: _Optional[str] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("partitions", "fts_partitions", "requests", "dialogs", "bytes", "first_ts", "last_ts", "by_model", "by_provider", "by_status", "server_id", "warnings")
    class ByModelEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ByProviderEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ByStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    FTS_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    DIALOGS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    FIRST_TS_FIELD_NUMBER: _ClassVar[int]
    LAST_TS_FIELD_NUMBER: _ClassVar[int]
    BY_MODEL_FIELD_NUMBER: _ClassVar[int]
    BY_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    partitions: int
    fts_partitions: int
    requests: int
    dialogs: int
    bytes: int
    first_ts: str
    last_ts: str
    by_model: _containers.ScalarMap[str, int]
    by_provider: _containers.ScalarMap[str, int]
    by_status: _containers.ScalarMap[str, int]
    server_id: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, partitions: _Optional[int] = ..., fts_partitions: _Optional[int] = ..., requests: _Optional[int] = ..., dialogs: _Optional[int] = ..., bytes: _Optional[int] = ..., first_ts: _Optional[str] = ..., last_ts: _Optional[str] = ..., by_model: _Optional[_Mapping[str, int]] = ..., by_provider: _Optional[_Mapping[str, int]] = ..., by_status: _Optional[_Mapping[str, int]] = ..., server_id: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...
