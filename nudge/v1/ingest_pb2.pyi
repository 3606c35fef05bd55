import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Event(_message.Message):
    __slots__ = ("event_id", "customer_id", "event_time", "event_type", "amount", "time_zone")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    customer_id: str
    event_time: _timestamp_pb2.Timestamp
    event_type: str
    amount: float
    time_zone: str
    def __init__(self, event_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_type: _Optional[str] = ..., amount: _Optional[float] = ..., time_zone: _Optional[str] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class EventResult(_message.Message):
    __slots__ = ("event_id", "outcome", "reason")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[EventResult.Outcome]
        OUTCOME_APPLIED: _ClassVar[EventResult.Outcome]
        OUTCOME_DUPLICATE: _ClassVar[EventResult.Outcome]
        OUTCOME_REJECTED: _ClassVar[EventResult.Outcome]
        OUTCOME_LATE: _ClassVar[EventResult.Outcome]
    OUTCOME_UNSPECIFIED: EventResult.Outcome
    OUTCOME_APPLIED: EventResult.Outcome
    OUTCOME_DUPLICATE: EventResult.Outcome
    OUTCOME_REJECTED: EventResult.Outcome
    OUTCOME_LATE: EventResult.Outcome
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    outcome: EventResult.Outcome
    reason: str
    def __init__(self, event_id: _Optional[str] = ..., outcome: _Optional[_Union[EventResult.Outcome, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("results", "applied", "duplicates", "rejected")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EventResult]
    applied: int
    duplicates: int
    rejected: int
    def __init__(self, results: _Optional[_Iterable[_Union[EventResult, _Mapping]]] = ..., applied: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[int] = ...) -> None: ...
