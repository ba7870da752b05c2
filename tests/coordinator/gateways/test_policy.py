"""The judgement, for any message and registry row: fail closed, never blind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from coordinator.gateways.policy import Gateway, GatewayMessage, Outcome, Reason, closes, judge
from protocols import BreakerEvent
from tests.coordinator.ops.factories import agent_status, breaker_event

NOW = datetime(2026, 11, 24, 2, 17, tzinfo=UTC)
SKEW = timedelta(minutes=5)
INCARNATIONS = st.sampled_from([None, "a" * 32, "b" * 32])
AGENTS = st.sampled_from(["gw-1", "gw-2"])
WAREHOUSES = st.sampled_from(["WH-01", "WH-02"])
OFFSETS = st.sampled_from([-3600, 0, 60, 299, 301, 86_400, 30 * 86_400])


@st.composite
def messages(draw: st.DrawFn) -> GatewayMessage:
    at = NOW + timedelta(seconds=draw(OFFSETS))
    agent, warehouse, incarnation = draw(AGENTS), draw(WAREHOUSES), draw(INCARNATIONS)
    if draw(st.booleans()):
        return breaker_event(seq=draw(st.integers(0, 10**9)), open=draw(st.booleans()),
                             warehouse=warehouse, agent=agent, at=at, incarnation=incarnation)
    return agent_status(online=draw(st.booleans()), session_seq=1, warehouse=warehouse,
                        agent=agent, at=at, incarnation=incarnation)


gateways = st.none() | st.builds(Gateway, agent_id=st.just("gw-1"), warehouse_id=WAREHOUSES,
                                 incarnation=INCARNATIONS)


def _time(message: GatewayMessage) -> datetime:
    return message.event_time if isinstance(message, BreakerEvent) else message.ts


@given(messages(), gateways, st.booleans())
def test_fail_closed_never_blind(message: GatewayMessage, gateway: Gateway | None,
                                 known: bool) -> None:
    if gateway is not None and gateway.agent_id != message.agent_id:
        gateway = None
    verdict = judge(message, gateway, warehouse_known=known, now=NOW,
                    max_skew=SKEW)
    trusted_source = (known and gateway is not None
                      and gateway.warehouse_id == message.warehouse_id)
    if not trusted_source:
        # unknown warehouse, unregistered or foreign agent: never applied, whatever it says
        assert verdict.outcome is Outcome.REFUSE
        assert verdict.reason in (Reason.UNKNOWN_WAREHOUSE, Reason.UNREGISTERED_AGENT,
                                  Reason.FOREIGN_AGENT)
        return
    if closes(message):
        # a registered gateway's trip or offline always closes, suspect or not
        assert verdict.applies
        moment = _time(verdict.message)
        assert moment - NOW <= SKEW  # a far-future time is replaced by the receive time
    elif verdict.applies:
        # what reopens a warehouse needs full trust: a sane time, a confirmed incarnation
        assert verdict.outcome is Outcome.APPLY
        moment = _time(message)
        assert moment - NOW <= SKEW
        assert gateway is not None
        assert message.incarnation in (None, gateway.incarnation) or gateway.incarnation is None
    else:
        assert verdict.field in ("event_time", "ts", "incarnation")
