"""The ledger: every order-side write goes through here.

Placing an order (intake, retry), moving it (reroute), marking it stuck, releasing or
shipping its stock, its timeline events, its allocation decisions and the alerts they
raise: callers decide *what* happens (pure engine decisions), a :class:`Ledger` collects
the rows and :meth:`Ledger.flush` writes them with one ``executemany`` per statement (a
reroute's moves as set-based statements from its incident record), in an order that
keeps stock honest:

1. stock given back (``release``) before stock taken (``reserve``), so a reroute may move
   an order's units within one warehouse's sellable stock;
2. stock taken with a guarded ``UPDATE ... WHERE on_hand - reserved - safety_stock >= qty``:
   fewer rows updated than asked means someone else took it, and :class:`StoreError`
   rolls the whole transaction back (no oversell, ever);
3. a placement of a waiting order is guarded on its status the same way.

Callers hold :func:`coordinator.db.write_transaction` around reading the snapshot and
flushing, so nothing changes in between. Single status changes (shipped, cancelled,
courier updates) and timeline notes are functions of their own.

The package: :mod:`~coordinator.ledger.batch` (the :class:`Ledger`: rows of one
transaction and their flush), :mod:`~coordinator.ledger.statements` (its SQL),
:mod:`~coordinator.ledger.encoding` (decisions and traces as stored),
:mod:`~coordinator.ledger.status` (single status changes and timeline notes).
Import from ``coordinator.ledger``.
"""

from coordinator.ledger.batch import Ledger, MovesInFlight
from coordinator.ledger.encoding import (
    TRACE_COLUMNS,
    line_warehouses,
    to_json,
    trace_candidates,
    trace_json,
)
from coordinator.ledger.statements import ORDER_COLUMNS
from coordinator.ledger.status import (
    AWAITING_PAYMENT,
    TIMELINE_LABELS,
    TRANSITIONS,
    WAITING_STATUSES,
    append_order_event,
    record_payment,
    record_status_event,
)

__all__ = [
    "AWAITING_PAYMENT", "ORDER_COLUMNS", "TIMELINE_LABELS", "TRACE_COLUMNS", "TRANSITIONS",
    "WAITING_STATUSES", "Ledger", "MovesInFlight", "append_order_event", "line_warehouses",
    "record_payment", "record_status_event", "to_json", "trace_candidates", "trace_json",
]
