"""Finding orders the way store staff know them: by internal id or by any channel's own
order number (Meituan, WeChat mini-program, Douyin), and by store, warehouse and status.

``GET /lookup/orders?q=MT-20260115-0001`` answers every order whose internal id or channel
order number is ``q`` (the same number may exist on two channels: both are listed, each
with its channel), optionally narrowed by ``store_id``, ``warehouse_id`` and ``status``;
without ``q`` it is a search by those filters, newest first. Names are given beside ids.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from coordinator import auth
from coordinator.db import Database

# store staff look orders up: any role (customer service, operators, viewers)
router = APIRouter(tags=["orders"], dependencies=[auth.requires(auth.ANY_ROLE)])

_COLUMNS = ("o.id, o.channel, o.channel_order_id, o.store_id, s.name AS store_name, o.status, "
            "o.status_reason, o.warehouse_id, w.name AS warehouse_name, o.eta, o.received_at")


def find_orders(db: Database, *, q: str | None = None, store_id: str | None = None,
                warehouse_id: str | None = None, status: str | None = None,
                limit: int = 50) -> list[dict[str, Any]]:
    where: list[str] = []
    params: dict[str, str | int] = {"limit": limit}
    if q is not None:
        where.append("(o.id = :q OR o.channel_order_id = :q)")
        params["q"] = q
    for name, value in (("store_id", store_id), ("warehouse_id", warehouse_id),
                        ("status", status)):
        if value is not None:
            where.append(f"o.{name} = :{name}")
            params[name] = value
    sql = (f"SELECT {_COLUMNS} FROM orders o LEFT JOIN stores s ON s.id = o.store_id "
           "LEFT JOIN warehouses w ON w.id = o.warehouse_id")
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY o.received_at DESC, o.id LIMIT :limit"
    cur = db.conn.execute(sql, params)
    names = [c[0] for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


Text = Annotated[str | None, Query(min_length=1, max_length=128)]


@router.get("/lookup/orders", summary="Find orders by internal id or channel order number")
def lookup_orders(request: Request, q: Text = None, store_id: Text = None,
                  warehouse_id: Text = None, status: Text = None,
                  limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    db: Database = request.app.state.connections.get()
    found = find_orders(db, q=q, store_id=store_id, warehouse_id=warehouse_id,
                        status=status, limit=limit)
    return {"q": q, "count": len(found), "orders": found}
