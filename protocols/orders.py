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


# As the channel sends it: masked (138****5678) and virtual numbers (13800000000_1234)
# come in each channel's own format, so only the length is checked here; whether it is a
# callable number is decided where it is used (coordinator.personal.is_phone).
Phone = Annotated[str, Field(min_length=1, max_length=64)]


class CustomerContact(_Lenient):
    """Who receives the order, as the channel gives it: personal data (PIPL), kept apart
    from the order, erased after the retention period and never logged.

    ``masked``: the channel sent a masked or virtual number (Meituan ``138****0000``,
    Douyin's masked receiver), so it cannot identify the customer across orders.
    ``consent``: what the channel reports about the buyer's consent to be contacted
    (None: the channel does not say).
    """

    phone: Phone | None = None
    name: str | None = Field(default=None, max_length=100)
    address: str | None = Field(default=None, max_length=500)
    consent: bool | None = None
    masked: bool = False


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
    contact: CustomerContact | None = None
    paid: bool = Field(default=True, description="false: waits for a payment event")

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
    """The mini-program's address (``wx.chooseAddress`` names, plus the map point)."""

    latitude: Lat
    longitude: Lon
    userName: str | None = Field(default=None, max_length=100)  # WeChat spells them so
    telNumber: Phone | None = None
    provinceName: str = Field(default="", max_length=50)
    cityName: str = Field(default="", max_length=50)
    countyName: str = Field(default="", max_length=50)
    detailInfo: str = Field(default="", max_length=300)

    def text(self) -> str | None:
        parts = (self.provinceName, self.cityName, self.countyName, self.detailInfo)
        return "".join(parts) or None


class WechatMiniOrder(_Lenient):
    """Mini-program checkout: ``submit_time_ms`` is when the user pressed submit."""

    channel: Literal["wechat_mini"] = "wechat_mini"
    out_trade_no: str = Field(min_length=1, max_length=64)
    openid: str | None = Field(default=None, max_length=128)
    store_code: str | None = Field(default=None, max_length=64)
    goods: list[WechatGoods] = Field(min_length=1, max_length=200)
    address: WechatLocation
    submit_time_ms: int | None = Field(default=None, ge=0)
    # WeChat Pay's trade_state: SUCCESS = paid, NOTPAY = created but not paid yet
    trade_state: Literal["SUCCESS", "NOTPAY"] = "SUCCESS"
    # the buyer accepted the mini-program's privacy notice (and subscribe messages)
    privacy_consent: bool | None = None


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
    recipient_name: str | None = Field(default=None, max_length=100)
    recipient_address: str | None = Field(default=None, max_length=500)
    detail: list[MeituanFood] = Field(min_length=1, max_length=200)
    latitude: Lat
    longitude: Lon
    ctime: int | None = Field(default=None, ge=0)
    # Meituan's order status: 1 = submitted, not paid yet; 2 and later = paid
    status: int | None = Field(default=None, ge=1, le=100)

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
    # Douyin masks the receiver for merchants (mask_post_tel 138****0000)
    mask_post_receiver: str | None = Field(default=None, max_length=100)
    mask_post_tel: Phone | None = None
    mask_post_addr: str | None = Field(default=None, max_length=500)
    # Douyin's order_status: 1 = awaiting payment; 2 and later = paid
    order_status: int | None = Field(default=None, ge=1, le=100)


ChannelOrder = WechatMiniOrder | MeituanOrder | DouyinOrder


def _from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _contact(phone: str | None, name: str | None, address: str | None,
             consent: bool | None, *, masked: bool = False) -> CustomerContact | None:
    if phone is None and name is None and address is None:
        return None
    return CustomerContact(phone=phone, name=name, address=address, consent=consent,
                           masked=masked)


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
                contact=_contact(order.address.telNumber, order.address.userName,
                                 order.address.text(), order.privacy_consent),
                paid=order.trade_state == "SUCCESS",
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
                # Meituan hands merchants a masked or virtual number, never the real one
                contact=_contact(order.recipient_phone, order.recipient_name,
                                 order.recipient_address, None, masked=True),
                paid=order.status != 1,
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
                contact=_contact(order.mask_post_tel, order.mask_post_receiver,
                                 order.mask_post_addr, None, masked=True),
                paid=order.order_status != 1,
            )
    raise TypeError(f"not an order payload: {type(order).__name__}")
