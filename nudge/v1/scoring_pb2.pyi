import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Channel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_UNSPECIFIED: _ClassVar[Channel]
    CHANNEL_EMAIL: _ClassVar[Channel]
    CHANNEL_SMS: _ClassVar[Channel]
    CHANNEL_PUSH: _ClassVar[Channel]

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_SEND_NOW: _ClassVar[Decision]
    DECISION_SCHEDULE: _ClassVar[Decision]
    DECISION_SUPPRESS: _ClassVar[Decision]

class FeatureStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_STATUS_UNSPECIFIED: _ClassVar[FeatureStatus]
    FEATURE_STATUS_FRESH: _ClassVar[FeatureStatus]
    FEATURE_STATUS_STALE: _ClassVar[FeatureStatus]
    FEATURE_STATUS_MISSING: _ClassVar[FeatureStatus]
    FEATURE_STATUS_UNAVAILABLE: _ClassVar[FeatureStatus]
CHANNEL_UNSPECIFIED: Channel
CHANNEL_EMAIL: Channel
CHANNEL_SMS: Channel
CHANNEL_PUSH: Channel
DECISION_UNSPECIFIED: Decision
DECISION_SEND_NOW: Decision
DECISION_SCHEDULE: Decision
DECISION_SUPPRESS: Decision
FEATURE_STATUS_UNSPECIFIED: FeatureStatus
FEATURE_STATUS_FRESH: FeatureStatus
FEATURE_STATUS_STALE: FeatureStatus
FEATURE_STATUS_MISSING: FeatureStatus
FEATURE_STATUS_UNAVAILABLE: FeatureStatus

class QuietHours(_message.Message):
    __slots__ = ("start_hour", "end_hour")
    START_HOUR_FIELD_NUMBER: _ClassVar[int]
    END_HOUR_FIELD_NUMBER: _ClassVar[int]
    start_hour: int
    end_hour: int
    def __init__(self, start_hour: _Optional[int] = ..., end_hour: _Optional[int] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("customer_id", "now", "window_start", "window_end", "quiet_hours", "channel")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    QUIET_HOURS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    now: _timestamp_pb2.Timestamp
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    quiet_hours: QuietHours
    channel: Channel
    def __init__(self, customer_id: _Optional[str] = ..., now: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., quiet_hours: _Optional[_Union[QuietHours, _Mapping]] = ..., channel: _Optional[_Union[Channel, str]] = ...) -> None: ...

class ScoreBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ScoreRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ScoreRequest, _Mapping]]] = ...) -> None: ...

class SendSlot(_message.Message):
    __slots__ = ("start_time", "probability")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    probability: float
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., probability: _Optional[float] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("customer_id", "purchase_propensity", "horizon_days", "best_send_time", "time_zone", "best_send_time_local", "time_zone_defaulted", "top_slots", "decision", "reason", "models", "feature_status", "feature_age_seconds", "channel", "channels", "channels_defaulted", "reminder", "propensity_reasons", "decision_reasons")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    PURCHASE_PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    HORIZON_DAYS_FIELD_NUMBER: _ClassVar[int]
    BEST_SEND_TIME_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    BEST_SEND_TIME_LOCAL_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_DEFAULTED_FIELD_NUMBER: _ClassVar[int]
    TOP_SLOTS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_STATUS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_DEFAULTED_FIELD_NUMBER: _ClassVar[int]
    REMINDER_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_REASONS_FIELD_NUMBER: _ClassVar[int]
    DECISION_REASONS_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    purchase_propensity: float
    horizon_days: int
    best_send_time: _timestamp_pb2.Timestamp
    time_zone: str
    best_send_time_local: str
    time_zone_defaulted: bool
    top_slots: _containers.RepeatedCompositeFieldContainer[SendSlot]
    decision: Decision
    reason: str
    models: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    feature_status: FeatureStatus
    feature_age_seconds: float
    channel: Channel
    channels: _containers.RepeatedCompositeFieldContainer[ChannelScore]
    channels_defaulted: bool
    reminder: Reminder
    propensity_reasons: _containers.RepeatedCompositeFieldContainer[ReasonCode]
    decision_reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, customer_id: _Optional[str] = ..., purchase_propensity: _Optional[float] = ..., horizon_days: _Optional[int] = ..., best_send_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_zone: _Optional[str] = ..., best_send_time_local: _Optional[str] = ..., time_zone_defaulted: _Optional[bool] = ..., top_slots: _Optional[_Iterable[_Union[SendSlot, _Mapping]]] = ..., decision: _Optional[_Union[Decision, str]] = ..., reason: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., feature_status: _Optional[_Union[FeatureStatus, str]] = ..., feature_age_seconds: _Optional[float] = ..., channel: _Optional[_Union[Channel, str]] = ..., channels: _Optional[_Iterable[_Union[ChannelScore, _Mapping]]] = ..., channels_defaulted: _Optional[bool] = ..., reminder: _Optional[_Union[Reminder, _Mapping]] = ..., propensity_reasons: _Optional[_Iterable[_Union[ReasonCode, _Mapping]]] = ..., decision_reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class ChannelScore(_message.Message):
    __slots__ = ("channel", "engage_probability", "best_send_time", "best_send_time_local")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    ENGAGE_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    BEST_SEND_TIME_FIELD_NUMBER: _ClassVar[int]
    BEST_SEND_TIME_LOCAL_FIELD_NUMBER: _ClassVar[int]
    channel: Channel
    engage_probability: float
    best_send_time: _timestamp_pb2.Timestamp
    best_send_time_local: str
    def __init__(self, channel: _Optional[_Union[Channel, str]] = ..., engage_probability: _Optional[float] = ..., best_send_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., best_send_time_local: _Optional[str] = ...) -> None: ...

class Reminder(_message.Message):
    __slots__ = ("send_time", "send_time_local", "interest", "interest_time", "decide_time_hours", "decide_time_defaulted", "reason")
    SEND_TIME_FIELD_NUMBER: _ClassVar[int]
    SEND_TIME_LOCAL_FIELD_NUMBER: _ClassVar[int]
    INTEREST_FIELD_NUMBER: _ClassVar[int]
    INTEREST_TIME_FIELD_NUMBER: _ClassVar[int]
    DECIDE_TIME_HOURS_FIELD_NUMBER: _ClassVar[int]
    DECIDE_TIME_DEFAULTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    send_time: _timestamp_pb2.Timestamp
    send_time_local: str
    interest: str
    interest_time: _timestamp_pb2.Timestamp
    decide_time_hours: float
    decide_time_defaulted: bool
    reason: str
    def __init__(self, send_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., send_time_local: _Optional[str] = ..., interest: _Optional[str] = ..., interest_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decide_time_hours: _Optional[float] = ..., decide_time_defaulted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ReasonCode(_message.Message):
    __slots__ = ("code", "contribution")
    CODE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    code: str
    contribution: float
    def __init__(self, code: _Optional[str] = ..., contribution: _Optional[float] = ...) -> None: ...

class ScoreBatchResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: ScoreResponse
    error: BatchError
    def __init__(self, response: _Optional[_Union[ScoreResponse, _Mapping]] = ..., error: _Optional[_Union[BatchError, _Mapping]] = ...) -> None: ...

class BatchError(_message.Message):
    __slots__ = ("customer_id", "code", "message")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    code: int
    message: str
    def __init__(self, customer_id: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ScoreBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ScoreBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ScoreBatchResult, _Mapping]]] = ...) -> None: ...
