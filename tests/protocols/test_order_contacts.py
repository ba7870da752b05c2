"""Each channel's buyer (phone, name, address, consent, masked) and payment state in the
one order model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.orders import DouyinOrder, MeituanOrder, WechatMiniOrder, normalise


def test_wechat_buyer_is_whole_with_consent_and_notpay_is_unpaid() -> None:
    order = normalise(WechatMiniOrder.model_validate({
        "out_trade_no": "WX-1", "store_code": "S1", "goods": [{"sku_id": "A", "num": 1}],
        "address": {"latitude": 30.3, "longitude": 120.2, "userName": "李四",
                    "telNumber": "13812345678", "provinceName": "浙江省", "cityName": "杭州市",
                    "countyName": "拱墅区", "detailInfo": "莫干山路1号"},
        "privacy_consent": True, "trade_state": "NOTPAY"}))
    assert order.contact is not None
    assert (order.contact.phone, order.contact.name, order.contact.address) == (
        "13812345678", "李四", "浙江省杭州市拱墅区莫干山路1号")
    assert order.contact.consent is True and order.contact.masked is False
    assert order.paid is False


def test_meituan_and_douyin_buyers_are_masked_and_paid_by_default() -> None:
    meituan = normalise(MeituanOrder.model_validate({
        "wm_order_id_view": "MT-1", "recipient_phone": "13800000000_1234",
        "recipient_name": "张*", "detail": [{"app_food_code": "A", "quantity": 1}],
        "latitude": 30.3, "longitude": 120.2}))
    assert meituan.contact is not None and meituan.contact.masked and meituan.paid
    douyin = normalise(DouyinOrder.model_validate({
        "shop_order_id": "DY-1", "shop_id": "S1", "order_status": 1,
        "sku_order_list": [{"out_sku_id": "A", "item_num": 1}],
        "post_addr": {"lat": 30.3, "lng": 120.2}, "mask_post_tel": "138****5678"}))
    assert douyin.contact is not None and douyin.contact.phone == "138****5678"
    assert douyin.contact.masked and douyin.paid is False
    without = normalise(DouyinOrder.model_validate({
        "shop_order_id": "DY-2", "shop_id": "S1",
        "sku_order_list": [{"out_sku_id": "A", "item_num": 1}],
        "post_addr": {"lat": 30.3, "lng": 120.2}}))
    assert without.contact is None and without.paid


@given(st.text(min_size=1, max_size=64))
def test_any_phone_text_a_channel_sends_is_kept_as_sent(phone: str) -> None:
    order = normalise(MeituanOrder.model_validate({
        "wm_order_id_view": "MT-1", "app_poi_code": "S1", "recipient_phone": phone,
        "detail": [{"app_food_code": "A", "quantity": 1}], "latitude": 30.3,
        "longitude": 120.2}))
    assert order.contact is not None and order.contact.phone == phone
