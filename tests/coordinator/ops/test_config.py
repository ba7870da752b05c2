"""The [ops] table of the coordinator's settings file."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.errors import ConfigError
from coordinator.ops.config import ops_config_of
from coordinator.settings import Settings


def test_ops_table_in_the_settings_file_configures_the_ops_side(tmp_path: Path) -> None:
    path = tmp_path / "breakwater.toml"
    path.write_text(
        'db_path = "x.sqlite"\n'
        "[ops]\nagent_offline_grace_s = 30\ncourier_silence_min = 45\n"
        "[ops.notify.wecom]\nenabled = true\n"
        'url = "http://127.0.0.1:9/cgi-bin/webhook/send?key=k"\nmsgtype = "text"\n'
        "[ops.notify.dispatcher]\nmax_attempts = 3\n",
        encoding="utf-8")
    config = ops_config_of(Settings.load(path, env={}))
    assert config.agent_offline_grace.total_seconds() == 30
    assert config.courier_silence.total_seconds() == 45 * 60
    assert config.notify.wecom.msgtype == "text"
    assert config.notify.dispatcher.max_attempts == 3


def test_defaults_without_an_ops_table() -> None:
    config = ops_config_of(Settings())
    assert config.notify.franchisee.sink == "jsonl"
    assert (config.dedupe_keep_per_agent, config.dedupe_prune_interval_s) == (1000, 60)


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ({"notify": {"wecom": {"enabled": True}}}, "ops.notify.wecom"),
        ({"agent_offline_grace_s": -1}, "ops.agent_offline_grace_s"),
        ({"notify": {"sms": {"enabled": True, "url": "http://x", "phone_numbers": []}}},
         "ops.notify.sms"),
        ({"mqtt": {"keepalive_s": 1}}, "ops.mqtt.keepalive_s"),
        ({"mqtt": {"reconnect_min_s": 5, "reconnect_max_s": 1}}, "reconnect_max_s"),
        ({"mqtt": {"reconnect_stable_s": -1}}, "ops.mqtt.reconnect_stable_s"),
        ({"mqtt": {"client_id": "has/slash"}}, "ops.mqtt.client_id"),
        ({"colour": "blue"}, "ops.colour"),
        ({"dedupe_keep_per_agent": 0}, "ops.dedupe_keep_per_agent"),
        ({"dedupe_prune_interval_s": 0}, "ops.dedupe_prune_interval_s"),
    ],
)
def test_bad_ops_settings_are_refused_naming_the_field(table: dict[str, object],
                                                       field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        ops_config_of(Settings.parse({"ops": table}))
