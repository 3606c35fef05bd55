"""The event vocabulary: what a customer's event can be, and which ones the customer initiated.

Shared by the batch feature pipeline, the simulator and the live feature state
(:mod:`nudge.contract.live_state`), so the two evaluations of a feature cannot disagree about
what an event or an engagement is.
"""

from __future__ import annotations

EVENT_TYPES: tuple[str, ...] = (
    "purchase",
    "site_visit",
    "cart_add",
    "email_send",
    "email_open",
    "email_click",
    "sms_send",
    "sms_click",
    "push_send",
    "push_open",
)
# Customer-initiated events; marketing sends are things done *to* the customer.
ENGAGEMENT_TYPES: frozenset[str] = frozenset(
    {"purchase", "site_visit", "cart_add", "email_open", "email_click", "sms_click", "push_open"}
)
