"""Operator and order text stays text in WeCom markdown, SMS bodies, the dashboard and
log lines."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from coordinator.dashboard import page_html
from coordinator.ops.config import NotifyConfig
from coordinator.ops.notify.escape import (
    SMS_MAX_CHARS,
    log_safe,
    sms_checked,
    wecom_markdown,
)
from coordinator.ops.notify.messages import IncidentSummary, WarehouseInfo, sms_body, wecom_body

MARKUP = set("<>[]()*`#~|\\\r\n")
HOSTILE = '**已恢复** <font color="info">全部正常</font> [点我](http://evil.example)\n## 假标题'


@given(st.text())
def test_wecom_text_carries_no_markup(text: str) -> None:
    assert not MARKUP & set(wecom_markdown(text))


@given(st.text(), st.integers(min_value=2, max_value=SMS_MAX_CHARS))
def test_sms_bodies_are_one_line_within_the_limit(text: str, limit: int) -> None:
    body = sms_checked(text, limit)
    assert len(body) <= limit
    assert not re.search(r"[\x00-\x1f\x7f]", body)


@given(st.text())
def test_log_lines_cannot_be_forged(text: str) -> None:
    assert "\n" not in log_safe(text) and "\r" not in log_safe(text)


def _summary() -> IncidentSummary:
    warehouse = WarehouseInfo("WH-02", "冷链一号仓 <b>", "", 30.1, 120.2)
    return IncidentSummary("inc-1", warehouse, "manual", HOSTILE,
                           datetime(2026, 11, 24, 2, 17, tzinfo=UTC))


def test_an_operators_reason_cannot_restyle_or_fake_a_wecom_message() -> None:
    content = wecom_body(_summary(), "markdown", [], "Asia/Shanghai")["markdown"]["content"]
    assert '<font color="info">全部正常' not in content and "**已恢复**" not in content
    assert "](http" not in content and "\n## 假标题" not in content
    assert content.startswith("## 仓库停止接单：") and "全部正常" in content


def test_an_sms_body_is_one_line_and_never_longer_than_the_limit() -> None:
    config = NotifyConfig.model_validate({"sms": {"template": "{reason} " * 200}})
    body = sms_body(_summary(), config)
    assert len(body["content"]) <= SMS_MAX_CHARS and "\n" not in body["content"]
    assert "\n" not in body["template_param"]["reason"]


def test_the_dashboard_never_parses_text_as_html() -> None:
    page = page_html()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in page
