"""Operations side of the coordinator: breaker subscription, rerouting triggers,
courier silence, manual pauses, notifications and metrics.

Public surface: :func:`coordinator.ops.app.create_app_with_ops` (coord's ``create_app``
plus everything below), or by hand :func:`coordinator.ops.app.ops_lifespan` (runs
:class:`coordinator.ops.runner.OpsService`) and :data:`coordinator.ops.api.router`.
"""
