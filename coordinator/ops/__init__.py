"""Operations side of the coordinator: breaker subscription, rerouting triggers,
courier silence, manual pauses, notifications and metrics.

Public surface: :class:`coordinator.ops.service.OpsService` (run it in the app's
lifespan) and :data:`coordinator.ops.api.router` (include it in the FastAPI app).
"""
