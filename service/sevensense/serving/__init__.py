"""The HTTP service: rooms by role, bottom first (telemetry, model_service, schemas, access,
model_paths, rollout, dispatch, tenant_index, then the faces http and stream); ``service``
wires them with BentoML (tests/test_layering.py holds the order)."""
