"""Order payloads as each sales channel sends them, and the one model they normalise to.

Each channel names its fields its own way; :func:`normalise` turns any of them into an
:class:`OrderIn`. Channel models accept only what they need and ignore the rest.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocols.models import UtcDatetime


class Channel(StrEnum):
    WECHAT_MINI = "wechat_mini"
    MEITUAN = "meituan"
    DOUYIN = "douyin"
    MANUAL = "manual"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, frozen=True)


Lat = Annotated[float, Field(ge=-90, le=90)]
Lon = Annotated[float, Field(ge=-180, le=180)]
Qty = Annotated[int, Field(ge=1, le=10_000)]


class OrderLine(_Lenient):
    sku_id: str = Field(min_length=1, max_length=64)
    qty: Qty


class OrderIn(_Lenient):
    """The one order model every channel is normalised into."""

    channel: Channel
    channel_order_id: str = Field(min_length=1, max_length=64)
    store_id: str | None = Field(default=None, max_length=64)
    customer_id: str | None = Field(default=None, max_length=128)
    lines: list[OrderLine] = Field(min_length=1, max_length=200)
    lat: Lat
    lon: Lon
    client_submitted_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _who(self) -> OrderIn:
        if self.store_id is None and self.customer_id is None:
            raise ValueError("an order needs store_id or customer_id")
        return self


# -- WeChat mini-program ---------------------------------------------------------
class WechatGoods(_Lenient):
    sku_id: str = Field(min_length=1, max_length=64)
    num: Qty


class WechatLocation(_Lenient):
    latitude: Lat
    longitude: Lon


class WechatMiniOrder(_Lenient):
    """Mini-program checkout: ``submit_time_ms`` is when the user pressed submit."""

    channel: Literal["wechat_mini"] = "wechat_mini"
    out_trade_no: str = Field(min_length=1, max_length=64)
    openid: str | None = Field(default=None, max_length=128)
    store_code: str | None = Field(default=None, max_length=64)
    goods: list[WechatGoods] = Field(min_length=1, max_length=200)
    address: WechatLocation
    submit_time_ms: int | None = Field(default=None, ge=0)


# -- Meituan ---------------------------------------------------------------------
# a detail string this long holds far more than the 200 items an order may have
MAX_DETAIL_TEXT = 100_000

class MeituanFood(_Lenient):
    app_food_code: str = Field(min_length=1, max_length=64)
    quantity: Qty


class MeituanOrder(_Lenient):
    """Meituan push (``wm_order_id_view``; ``ctime`` in Unix seconds). Meituan sends
    ``detail`` as a JSON *string* (``"[{\"app_food_code\": ...}]"``); a list is accepted
    too."""

    channel: Literal["meituan"] = "meituan"
    wm_order_id_view: str = Field(min_length=1, max_length=64)
    app_poi_code: str | None = Field(default=None, max_length=64)
    recipient_phone: str | None = Field(default=None, max_length=64)
    detail: list[MeituanFood] = Field(min_length=1, max_length=200)
    latitude: Lat
    longitude: Lon
    ctime: int | None = Field(default=None, ge=0)

    @field_validator("detail", mode="before")
    @classmethod
    def _detail_as_sent(cls, value: object) -> object:
        if isinstance(value, str | bytes):
            if len(value) > MAX_DETAIL_TEXT:
                raise ValueError(f"JSON text longer than {MAX_DETAIL_TEXT} characters")
            try:
                return json.loads(value)
            except ValueError as exc:  # JSONDecodeError and bad UTF-8 bytes
                raise ValueError(f"not a JSON array of items: {exc}") from exc
        return value


# -- Douyin ----------------------------------------------------------------------
class DouyinSku(_Lenient):
    out_sku_id: str = Field(min_length=1, max_length=64)
    item_num: Qty


class DouyinAddress(_Lenient):
    lat: Lat
    lng: Lon


class DouyinOrder(_Lenient):
    """Douyin shop order (``create_time`` in Unix seconds, ``submit_ms`` optional)."""

    channel: Literal["douyin"] = "douyin"
    shop_order_id: str = Field(min_length=1, max_length=64)
    shop_id: str | None = Field(default=None, max_length=64)
    buyer_id: str | None = Field(default=None, max_length=128)
    sku_order_list: list[DouyinSku] = Field(min_length=1, max_length=200)
    post_addr: DouyinAddress
    create_time: int | None = Field(default=None, ge=0)
    submit_ms: int | None = Field(default=None, ge=0)


ChannelOrder = WechatMiniOrder | MeituanOrder | DouyinOrder


def _from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def normalise(order: ChannelOrder | OrderIn) -> OrderIn:
    """Turn a channel's own payload into the one order model."""
    match order:
        case OrderIn():
            return order
        case WechatMiniOrder():
            return OrderIn(
                channel=Channel.WECHAT_MINI,
                channel_order_id=order.out_trade_no,
                store_id=order.store_code,
                customer_id=order.openid,
                lines=[OrderLine(sku_id=g.sku_id, qty=g.num) for g in order.goods],
                lat=order.address.latitude,
                lon=order.address.longitude,
                client_submitted_at=_from_ms(order.submit_time_ms),
            )
        case MeituanOrder():
            return OrderIn(
                channel=Channel.MEITUAN,
                channel_order_id=order.wm_order_id_view,
                store_id=order.app_poi_code,
                customer_id=order.recipient_phone,
                lines=[OrderLine(sku_id=f.app_food_code, qty=f.quantity) for f in order.detail],
                lat=order.latitude,
                lon=order.longitude,
                client_submitted_at=_from_ms(None if order.ctime is None else order.ctime * 1000),
            )
        case DouyinOrder():
            submitted = order.submit_ms
            if submitted is None and order.create_time is not None:
                submitted = order.create_time * 1000
            return OrderIn(
                channel=Channel.DOUYIN,
                channel_order_id=order.shop_order_id,
                store_id=order.shop_id,
                customer_id=order.buyer_id,
                lines=[
                    OrderLine(sku_id=s.out_sku_id, qty=s.item_num)
                    for s in order.sku_order_list
                ],
                lat=order.post_addr.lat,
                lon=order.post_addr.lng,
                client_submitted_at=_from_ms(submitted),
            )
    raise TypeError(f"not an order payload: {type(order).__name__}")
