"""A generated past-orders export (the usual Chinese headers) with known health figures.

Order ``i`` of day ``d`` (``j`` within the day) is built by rule, so the figures are
known in advance:

- channels: 美团 40 %, 小程序 40 %, 抖音 20 %; entry delay 美团 17 min, 小程序 1 min,
  抖音 5 min (the export's 接单时间);
- 72 % of destinations ~0.6 km from a store, the rest ~30 km north of the region;
- 10 % delivered 30 h after the order (late against a 24 h promise), 2 % never signed
  for (only before the last day, so they are all overdue), the rest after 6 h;
- 5 % carry an exception; 2.5 % have no payment time;
- the first 12 orders of the day: store ``CYC-jj`` orders every third day (a fixed
  cycle, spread 0); on its other days the order goes to one of 7 ``IRR`` stores that order
  nearly daily (no cycle);
- every fourth order has a second line.

``bad_rows`` extra rows each break one column (quantity, order time, coordinates).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path

from protocols.geo import offset_km

HEADERS = ("订单号", "下单时间", "支付时间", "接单时间", "渠道", "收货地址", "经纬度", "SKU",
           "数量", "门店/加盟商", "快递公司", "签收时间", "异常")
CHANNELS = ("美团", "小程序", "美团", "小程序", "抖音")
ENTRY_MIN = {"美团": 17, "小程序": 1, "抖音": 5}
CYCLE_STORES = 12
FAR = (30.70, 120.10)  # ~30 km north of the sample region's northernmost store
_FMT = "%Y-%m-%d %H:%M:%S"


def _text(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime(_FMT)


def rows(*, start: date, days: int, per_day: int, stores: Sequence[tuple[float, float]],
         bad_rows: int = 0) -> Iterator[list[object]]:
    """Data rows in :data:`HEADERS` order (times as wall-clock China time, no zone)."""
    base = datetime(start.year, start.month, start.day)
    step = 86_400 / per_day
    for d in range(days):
        for j in range(per_day):
            i = d * per_day + j
            ordered = base + timedelta(days=d, seconds=j * step)
            channel = CHANNELS[i % 5]
            paid = None if i % 40 == 19 else ordered + timedelta(seconds=30)
            entered = ordered + timedelta(minutes=ENTRY_MIN[channel])
            if i % 25 < 18:
                lat, lon = stores[i % len(stores)]
                lat, lon = offset_km(lat, lon, 0.4, 0.4)
            else:
                lat, lon = offset_km(*FAR, (i % 7) * 0.3, (i % 5) * 0.3)
            if i % 10 == 3:
                delivered: datetime | None = ordered + timedelta(hours=30)
            elif i % 50 == 7 and d < days - 1:
                delivered = None
            else:
                delivered = ordered + timedelta(hours=6)
            if j < CYCLE_STORES and (d + j) % 3 == 0:
                store = f"CYC-{j + 1:02d}"
            else:
                store = f"IRR-{(d * 3 + j) % 7}"
            exception = "地址不详" if i % 20 == 11 else ""
            order_no = f"H{i:08d}"
            common = [order_no, _text(ordered), _text(paid), _text(entered), channel,
                      f"杭州市测试路{i % 300}号", f"{lon:.6f},{lat:.6f}"]
            tail = [store, "中通" if i % 2 else "顺丰", _text(delivered), exception]
            yield [*common, f"SKU-{i % 40 + 1:04d}", 1 + i % 3, *tail]
            if i % 4 == 0:
                yield [*common, f"SKU-{(i + 7) % 40 + 1:04d}", 2, *tail]
    for k in range(bad_rows):
        broken: list[object] = [f"BAD{k:04d}", "2026-11-01 10:00:00", "", "", "美团", "",
                                "120.1,30.2", "SKU-0001", 1, "", "", "", ""]
        if k % 3 == 0:
            broken[8] = "两箱"       # quantity not a number
        elif k % 3 == 1:
            broken[1] = "昨天上午"   # order time not a time
        else:
            broken[6] = "120.1"      # coordinates without a latitude
        yield broken


def write_csv(path: Path, data: Iterator[list[object]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADERS)
        writer.writerows(data)
    return path


def write_xlsx(path: Path, data: Iterator[list[object]]) -> Path:
    """Times become real Excel date cells, as a spreadsheet export has them."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("订单")
    sheet.append(list(HEADERS))
    for row in data:
        cells = list(row)
        for index in (1, 2, 3, 11):
            text = cells[index]
            if isinstance(text, str) and text and text[0].isdigit() and ":" in text:
                cells[index] = datetime.strptime(text, _FMT)
        sheet.append(cells)
    book.save(path)
    return path
