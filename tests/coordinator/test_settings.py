"""Settings: defaults, TOML file, environment, errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.errors import ConfigError
from coordinator.settings import AllocationConfig, Settings


def test_file_then_environment_override(tmp_path: Path) -> None:
    path = tmp_path / "breakwater.toml"
    path.write_text(
        'db_path = "from-file.sqlite"\n[allocation]\nreservation_threshold = 0.7\n'
        '[allocation.channel_rules.douyin]\ntier_shift = -1\n[ops]\ngrace_s = 90\n',
        encoding="utf-8",
    )
    settings = Settings.load(path, env={"BREAKWATER_DB": "from-env.sqlite",
                                         "BREAKWATER_SKEW_THRESHOLD_S": "5"})
    assert settings.db_path == "from-env.sqlite"
    assert settings.allocation.reservation_threshold == 0.7
    assert settings.allocation.tier_for("douyin") == 1
    assert settings.intake.skew_threshold_s == 5.0
    assert settings.section("ops") == {"grace_s": 90}


def test_bad_value_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"allocation\.nearest"):
        Settings.parse({"allocation": {"nearest": 0}})
    with pytest.raises(ConfigError, match="db_pth"):
        Settings.parse({"db_pth": "typo.sqlite"})
    with pytest.raises(ConfigError, match=r"intake\.retry_limit"):
        Settings.parse({"intake": {"retry_limit": 0}})
    with pytest.raises(ConfigError, match=r"intake\.retry_on_change"):
        Settings.parse({"intake": {"retry_on_change": "sometimes"}})
    for bad_db in ("", "mysql://db-host/breakwater", "POSTGRESQL://x", "sqlite:///",
                   "sqlite://relative.sqlite"):
        with pytest.raises(ConfigError, match="db_path"):
            Settings.parse({"db_path": bad_db})
    for good_db in ("breakwater.sqlite", "sqlite:///rel.sqlite", "sqlite:////abs/x.sqlite",
                    "postgresql://u@h:5432/db", "postgres://u@h/db"):
        assert Settings.parse({"db_path": good_db}).db_path == good_db
    with pytest.raises(ConfigError, match=r"reads\.max_yield_s"):
        Settings.parse({"reads": {"max_yield_s": -1}})
    with pytest.raises(ConfigError, match=r"reads\.max_active"):
        Settings.parse({"reads": {"max_active": "many"}})


def test_rule_set_version_changes_with_the_rules() -> None:
    base = AllocationConfig()
    assert base.version == AllocationConfig().version
    assert base.version != AllocationConfig(weight_depth=0.1).version
    assert base.tier_for("meituan") == 1 and base.forces_cold_chain("meituan")


def test_several_broker_urls_from_the_file_or_comma_separated_from_the_environment(
    tmp_path: Path,
) -> None:
    path = tmp_path / "breakwater.toml"
    path.write_text('mqtt_url = ["mqtt://10.0.0.1:1883", "mqtts://mq-2.example.com"]\n',
                    encoding="utf-8")
    assert Settings.load(path, env={}).mqtt_url == (
        "mqtt://10.0.0.1:1883", "mqtts://mq-2.example.com")
    env = {"MQTT_URL": "mqtt://a:1883, mqtt://b:1884"}
    assert Settings.load(None, env=env).mqtt_url == ("mqtt://a:1883", "mqtt://b:1884")
    assert Settings(mqtt_url="mqtt://one:1883").mqtt_url == ("mqtt://one:1883",)


@pytest.mark.parametrize("bad", ["http://a:1883", "mqtt://a:1883,", [], ["mqtt://a", 5],
                                 "mqtt://a:port"])
def test_a_bad_broker_list_is_refused_naming_mqtt_url(bad: object) -> None:
    with pytest.raises(ConfigError, match="mqtt_url"):
        Settings.parse({"mqtt_url": bad})


def test_instance_name_is_stable_per_host_and_port_unless_given() -> None:
    first, again = Settings(port=8081), Settings(port=8081)
    assert first.instance == again.instance and first.instance.endswith("-8081")
    assert Settings(port=8082).instance != first.instance
    assert Settings.load(None, env={"BREAKWATER_INSTANCE": "coord-b"}).instance == "coord-b"
    with pytest.raises(ConfigError, match="instance_id"):
        Settings.parse({"instance_id": "has space"})
