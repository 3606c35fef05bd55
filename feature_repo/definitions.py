"""Feast definitions for nudge: the one place features are defined.

Training (`get_historical_features`) and serving (the online read) both ask for the
feature services below, never for hand-typed lists.

Two feature views, so a serving read touches few views:

* ``customer_stats``: scalar recency/frequency/monetary/engagement features, one row per
  customer per snapshot (written by ``nudge features``; every customer at every snapshot).
  Propensity reads ``STATS_FEATURES``; ``ENGAGEMENT_FEATURES`` (channel sends, the open
  interest) are read by ``engagement_v1`` only.
* ``customer_time_histograms``: decayed, normalised engagement histograms in the customer's
  local time, stored as ``Array(Float32)`` (one feature per histogram, not 168 scalars).
  A normalised exponentially-decayed histogram does not change between events, so the
  pipeline writes a row only when a customer's histogram changed; hence the long TTL.
  Its source is a push source so real-time engagement events can update online rows.

Source paths are absolute, resolved from this file: Feast's DuckDB offline store resolves a
relative path against the working directory, not the repo.
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.types import Array, Float32, String
from feast.value_type import ValueType

DATA_DIR = Path(__file__).resolve().parent / "data"

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A customer of the business; ids are opaque strings.",
)

customer_stats_source = FileSource(
    name="customer_stats_source",
    path=str(DATA_DIR / "customer_stats.parquet"),
    timestamp_field="event_timestamp",
)

customer_time_histograms_file = FileSource(
    name="customer_time_histograms_file",
    path=str(DATA_DIR / "customer_time_histograms.parquet"),
    timestamp_field="event_timestamp",
)

customer_time_histograms_push = PushSource(
    name="customer_time_histograms_push",
    batch_source=customer_time_histograms_file,
)

STATS_FEATURES = [
    Field(name="tenure_days", dtype=Float32, description="Days since signup or first event."),
    Field(name="purchase_count_7d", dtype=Float32),
    Field(name="purchase_count_30d", dtype=Float32),
    Field(name="purchase_count_90d", dtype=Float32),
    Field(name="purchase_count_total", dtype=Float32),
    Field(name="days_since_last_purchase", dtype=Float32, description="Null if never purchased."),
    Field(name="amount_total_90d", dtype=Float32),
    Field(name="amount_avg", dtype=Float32, description="Mean purchase amount; null if none."),
    Field(name="gap_mean_days", dtype=Float32, description="Mean inter-purchase gap; null if < 2."),
    Field(name="gap_std_days", dtype=Float32, description="Spread of the gap; null if < 3."),
    Field(name="cycle_ratio", dtype=Float32, description="days_since_last_purchase / gap_mean_days."),
    Field(name="site_visit_count_7d", dtype=Float32),
    Field(name="site_visit_count_30d", dtype=Float32),
    Field(name="cart_add_count_30d", dtype=Float32),
    Field(name="days_since_last_engagement", dtype=Float32, description="Null if never engaged."),
    Field(name="sends_30d", dtype=Float32, description="Marketing sends over all channels."),
    Field(name="email_open_rate_90d", dtype=Float32, description="Opens / sends; null if no sends."),
    Field(name="email_click_rate_90d", dtype=Float32),
    Field(name="sms_click_rate_90d", dtype=Float32),
    Field(name="push_open_rate_90d", dtype=Float32),
    Field(name="decide_time_hours", dtype=Float32, description="Median visit/cart-add → purchase."),
    Field(name="engagement_count_decayed", dtype=Float32, description="Engagements, 30-day half-life."),
]

# Also in customer_stats, but not propensity_v1's inputs (its trained models keep theirs):
# engagement_v1 reads them, for the best channel and decide-time reminders (issue 12).
ENGAGEMENT_FEATURES = [
    Field(name="email_sends_90d", dtype=Float32, description="Email sends; opens = rate × sends."),
    Field(name="sms_sends_90d", dtype=Float32),
    Field(name="push_sends_90d", dtype=Float32),
    Field(
        name="hours_since_open_interest",
        dtype=Float32,
        description="Hours since the latest visit/cart-add (≤ 90 d); null if a purchase followed.",
    ),
    Field(name="open_interest_is_cart", dtype=Float32, description="1 if that interest is a cart-add."),
]

customer_stats = FeatureView(
    name="customer_stats",
    entities=[customer],
    ttl=timedelta(days=30),
    schema=[
        *STATS_FEATURES,
        *ENGAGEMENT_FEATURES,
        Field(name="time_zone", dtype=String, description="IANA time zone."),
    ],
    source=customer_stats_source,
    online=True,
    description="Point-in-time customer statistics, one row per customer per snapshot.",
)

customer_time_histograms = FeatureView(
    name="customer_time_histograms",
    entities=[customer],
    ttl=timedelta(days=365),
    schema=[
        Field(name="hist_hour_of_week", dtype=Array(Float32), description="168 slots, Monday 00h = 0."),
        Field(name="hist_hour_of_day", dtype=Array(Float32), description="24 local hours."),
        Field(name="hist_day_of_week", dtype=Array(Float32), description="7 local days, Monday = 0."),
        Field(name="hist_event_count", dtype=Float32, description="Engagements behind the histograms."),
    ],
    source=customer_time_histograms_push,
    online=True,
    description="Decayed engagement-time histograms in the customer's local time.",
)

propensity_v1 = FeatureService(
    name="propensity_v1",
    features=[customer_stats[[f.name for f in STATS_FEATURES]]],
    description="Inputs of the purchase-propensity model.",
)

send_time_v1 = FeatureService(
    name="send_time_v1",
    features=[
        customer_time_histograms,
        customer_stats[["days_since_last_engagement", "engagement_count_decayed", "time_zone"]],
    ],
    description="Inputs of the send-time model, plus the time zone the policy needs.",
)

engagement_v1 = FeatureService(
    name="engagement_v1",
    features=[
        customer_stats[
            [
                *(f.name for f in ENGAGEMENT_FEATURES),
                "email_open_rate_90d",
                "email_click_rate_90d",
                "sms_click_rate_90d",
                "push_open_rate_90d",
                "decide_time_hours",
                "time_zone",
            ]
        ]
    ],
    description="Inputs of the channel choice and decide-time reminders (issue 12).",
)
