"""MQTT plumbing shared by the agent's connection loops (aiomqtt): connection arguments,
failure logging, cancellation that survives Python 3.11's ``wait_for``, owned queues."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiomqtt

from edge_agent.config import MqttSection
from protocols.mqtt_url import parse_mqtt_url
from protocols.reconnect import Attempt

log = logging.getLogger("edge_agent")


def client_kwargs(section: MqttSection, identifier: str) -> dict[str, Any]:
    """Called once per connection loop: the TLS context (CA and client certificate read
    from disk) is built here and reused by every reconnect, to whichever broker."""
    return {
        "identifier": section.client_id or identifier,
        "password": section.password,
        "keepalive": section.keepalive_s,
        "tls_context": section.tls_context(),
    }


def broker_address(url: str) -> dict[str, Any]:
    address = parse_mqtt_url(url)
    return {"hostname": address.host, "port": address.port}


# What OpenSSL and paho say when a TLS connection is refused for its certificates; aiomqtt
# passes on only the text, so these mark the failures that retrying will not fix.
_TLS_FAILURE_MARKS = ("SSL", "certificate", "CERTIFICATE", "tlsv", "TLSV")


def log_connect_failure(
    what: str, section: MqttSection, url: str, exc: aiomqtt.MqttError, attempt: Attempt
) -> None:
    text = str(exc)
    if section.tls and any(mark in text for mark in _TLS_FAILURE_MARKS):
        # An error, not a warning: a wrong CA or a refused client certificate is a
        # configuration fault that keeps every event in the outbox until someone acts.
        log.error(
            "%s %s: TLS failed: %s (check ca_file=%s, cert_file=%s, key_file=%s); "
            "trying %s in %.1fs",
            what, url, text, section.ca_file or "<system trust store>",
            section.cert_file, section.key_file, attempt.url, attempt.delay_s,
        )
    else:
        log.warning("%s %s: %s; trying %s in %.1fs", what, url, text, attempt.url,
                    attempt.delay_s)


async def cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until they have ended. Python 3.11's ``wait_for`` (used
    inside aiomqtt) can swallow a cancellation that races with a result, so a task that is
    still running after a second is cancelled again rather than waited on forever."""
    for task in tasks:
        task.cancel()
    pending = {t for t in tasks if not t.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=1.0)
        for task in pending:
            task.cancel()
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.debug("task %s ended with %r", task.get_name(), task.exception())


def reraise_if_cancelling(exc: BaseException) -> None:
    """A disconnect that fails while the task is being cancelled must not swallow the
    cancellation (the reconnect loop would then run forever)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


def owned_queue(
    holder: list[asyncio.Queue[aiomqtt.Message]],
) -> type[asyncio.Queue[aiomqtt.Message]]:
    """A queue class for aiomqtt's ``queue_type`` that hands us the instance it builds."""

    class OwnedQueue(asyncio.Queue[aiomqtt.Message]):
        def __init__(self, maxsize: int = 0) -> None:
            super().__init__(maxsize)
            holder.append(self)

    return OwnedQueue
