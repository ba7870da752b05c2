"""Who may call the coordinator: API tokens, people's logins and sessions, roles and
scopes. Routes declare their roles with :func:`requires` (see ``guard``); the app calls
:func:`install` once every router is included. docs/security.md has the whole picture."""

from coordinator.auth.api import bootstrap, install
from coordinator.auth.guard import Caller, forbid, public, requires
from coordinator.auth.roles import ANY_ROLE, Identity, Role, Scope

__all__ = ["ANY_ROLE", "Caller", "Identity", "Role", "Scope", "bootstrap", "forbid",
           "install", "public", "requires"]
