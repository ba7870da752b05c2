"""The request and response models of the core API (orders, catalogue, every 422 and 404),
and the bounds they check: instants with a UTC form, integers SQLite can hold."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
)

from protocols.models import EventDatetime, Text
from protocols.orders import DouyinOrder, MeituanOrder, OrderIn, WechatMiniOrder

# SQLite's INTEGER is 64-bit: a larger number in a query (an offset, an id) raised
# OverflowError in the driver, a 500 instead of a 422 naming the parameter
SQLITE_INT_MAX = 2**63 - 1


def in_utc_range(moment: datetime) -> bool:
    """Whether an aware datetime has a UTC form: every stamp is stored in UTC, and
    ``0001-01-01T00:00+01:00`` or ``9999-12-31T23:59-01:00`` have none (OverflowError)."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def _payload_tag(value: Any) -> str | None:
    """Which model a body item is: the normalised shape has ``channel_order_id``."""
    if isinstance(value, dict):
        if "channel_order_id" in value:
            return "normalised"
        channel = value.get("channel")
        return channel if channel in ("wechat_mini", "meituan", "douyin") else "normalised"
    if isinstance(value, BaseModel):
        return "normalised" if isinstance(value, OrderIn) else str(getattr(value, "channel", ""))
    return None


OrderPayload = Annotated[
    Annotated[OrderIn, Tag("normalised")]
    | Annotated[WechatMiniOrder, Tag("wechat_mini")]
    | Annotated[MeituanOrder, Tag("meituan")]
    | Annotated[DouyinOrder, Tag("douyin")],
    Discriminator(
        _payload_tag,
        custom_error_type="order_payload",
        custom_error_message="expected an order object (a channel payload or a normalised order)",
    ),
]


class OrderResult(BaseModel):
    order_id: str
    channel: str
    channel_order_id: str
    created: bool = Field(description="false: this (channel, channel_order_id) already existed")
    status: str
    warehouse_id: str | None
    tier: int
    eta: str | None
    reason: str | None
    skewed: bool = Field(description="client clock differs from ours by more than the threshold")


class BatchResult(BaseModel):
    results: list[OrderResult]
    created: int
    duplicates: int


class StatusEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["shipped", "in_transit", "delivered", "cancelled"]
    at: EventDatetime | None = Field(default=None, description="event time; default: now")
    detail: dict[str, Any] = Field(default_factory=dict)


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Text: a lone surrogate (JSON "\ud800") reached the store's driver, which cannot
    # encode it: a 500 on both backends (found by fuzzing)
    order_ids: list[Text] | None = Field(
        default=None, max_length=10_000,
        description="retry only these (those not waiting are ignored); default: every one",
    )
    limit: int = Field(default=1000, ge=1, le=10_000,
                       description="most orders tried, highest tier then oldest first")


class Problem(BaseModel):
    detail: str
    field: str | None = None


class FieldError(BaseModel):
    field: str
    msg: str
    type: str


class InvalidRequest(BaseModel):
    """Every 422: what is wrong with the request and where (``body.0.goods.1.num``,
    ``query.limit``, ``row 3.on_hand``, or the kind of an unknown reference)."""

    detail: str
    field: str
    errors: list[FieldError] = Field(default_factory=list,
                                     description="each invalid field (the first 20)")
    value: str | None = Field(default=None, description="the unknown id, for a reference")
