"""The ``[intel]`` settings table: health report thresholds, the return classifier's
retraining, the geocoder and the backup carrier.

    [intel]
    near_store_km = 5
    [intel.geocoder]
    amap_key = "..."          # 高德 web-service key; empty: the offline gazetteer only
    region = "杭州市"
    [intel.parcels]
    stuck_after_h = 24
    backup_carrier = "SF"
    backup_webhook_url = "https://carrier.example.com/handover"
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from coordinator.errors import ConfigError
from coordinator.intel.geocode import GAZETTEER_REGIONS
from coordinator.settings import Settings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReportConfig(_Section):
    days: int = Field(default=30, ge=1, le=366, description="report window")
    near_store_km: float = Field(default=5.0, gt=0, le=1000)
    promise_h: float = Field(default=24.0, gt=0, le=24 * 30,
                             description="delivery promise when the export has no promised time")
    cycle_min_orders: int = Field(default=5, ge=3, le=1000,
                                  description="reorders needed before a cycle is judged")
    cycle_max_spread_days: float = Field(default=1.0, ge=0, le=30,
                                         description="interval spread that still counts as fixed")
    heat_cells: int = Field(default=16, ge=4, le=64, description="heat map grid per side")


class ReturnsConfig(_Section):
    retrain_every_h: float = Field(default=24.0, gt=0, le=24 * 30)
    min_corrections_to_retrain: int = Field(default=1, ge=1, le=100_000)


class GeocoderConfig(_Section):
    amap_key: SecretStr = Field(default=SecretStr(""), description="高德 web-service key")
    amap_url: str = "https://restapi.amap.com/v3/geocode/geo"
    region: str = Field(default="杭州市", min_length=1, max_length=50)
    timeout_s: float = Field(default=3.0, gt=0, le=60)

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        # the offline fallback must exist for the region, or a map-service outage would
        # send every address to a person
        if value not in GAZETTEER_REGIONS:
            raise ValueError(f"no offline gazetteer for {value!r} "
                             f"(have: {', '.join(GAZETTEER_REGIONS)})")
        return value


class ParcelsConfig(_Section):
    stuck_after_h: float = Field(default=24.0, gt=0, le=24 * 30,
                                 description="no tracking update for this long after pickup")
    feed_alive_within_h: float = Field(default=2.0, gt=0, le=24 * 7,
                                       description="the carrier's feed counts as alive if it "
                                       "sent any update this recently")
    backup_carrier: str = Field(default="", max_length=64)
    backup_webhook_url: str = Field(default="", max_length=2000)
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    check_every_s: float = Field(default=300.0, gt=0, le=86_400)


class IntelConfig(_Section):
    report: ReportConfig = Field(default_factory=ReportConfig)
    returns: ReturnsConfig = Field(default_factory=ReturnsConfig)
    geocoder: GeocoderConfig = Field(default_factory=GeocoderConfig)
    parcels: ParcelsConfig = Field(default_factory=ParcelsConfig)
    import_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)

    @classmethod
    def of(cls, settings: Settings) -> IntelConfig:
        try:
            return cls.model_validate(settings.section("intel"))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = f"invalid setting intel.{where}: {first['msg']}"
            raise ConfigError(message) from exc
