"""Who a caller is (:class:`Identity`), what they may do (:class:`Role`) and where
(:class:`Scope`). Pure: no database, no HTTP."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    """Roles are sets of duties, not a ladder: an integration may write stock but not
    pause a warehouse, an operator the other way round. ``admin`` may do everything."""

    VIEWER = "viewer"  # dashboard, lookups
    CUSTOMER_SERVICE = "customer_service"  # order lookups, customer-facing actions
    OPERATOR = "operator"  # pause/resume, ack, retry, commands to agents
    INTEGRATION = "integration"  # orders, tracking, catalogue and stock writes
    ADMIN = "admin"  # tokens, users, registry, settings


ANY_ROLE = frozenset(Role)


@dataclass(frozen=True)
class Scope:
    """Where a credential may look and act. ``None``: everywhere. A franchisee's scope
    names their stores: they see only those stores' orders and notices. A scope naming
    warehouses lets a credential see those warehouses' orders and act on them."""

    stores: frozenset[str] | None = None
    warehouses: frozenset[str] | None = None

    @classmethod
    def of(cls, stores: Iterable[str] | None = None,
           warehouses: Iterable[str] | None = None) -> Scope:
        return cls(None if stores is None else frozenset(stores),
                   None if warehouses is None else frozenset(warehouses))

    @property
    def unlimited(self) -> bool:
        return self.stores is None and self.warehouses is None

    def sees_order(self, store_id: str | None, warehouse_id: str | None) -> bool:
        if self.unlimited:
            return True
        return ((self.stores is not None and store_id in self.stores)
                or (self.warehouses is not None and warehouse_id in self.warehouses))

    def covers_warehouse(self, warehouse_id: str) -> bool:
        if self.unlimited:
            return True
        return self.warehouses is not None and warehouse_id in self.warehouses

    def covers_store(self, store_id: str) -> bool:
        if self.unlimited:
            return True
        return self.stores is not None and store_id in self.stores

    def as_json(self) -> dict[str, list[str] | None]:
        return {"stores": None if self.stores is None else sorted(self.stores),
                "warehouses": None if self.warehouses is None else sorted(self.warehouses)}


@dataclass(frozen=True)
class Identity:
    """The authenticated caller. :attr:`actor` is what audits record."""

    kind: Literal["token", "user"]
    name: str
    role: Role
    scope: Scope = Scope()
    credential_id: str = ""

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"

    def may(self, roles: frozenset[Role]) -> bool:
        return self.role is Role.ADMIN or self.role in roles
