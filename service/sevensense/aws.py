"""boto3 clients configured one way for the queues, the object store and the worker."""

from __future__ import annotations

import os
from typing import Any

from sevensense.errors import SevensenseError


def client(
    service: str,
    error: type[SevensenseError],
    *,
    connect_timeout: float = 10,
    read_timeout: float = 60,
    max_pool_connections: int = 10,
) -> Any:
    """A client as boto3 configures it from the environment (region, credentials,
    AWS_ENDPOINT_URL), with standard retries unless the environment chooses its own;
    creation failures (no region, bad config) raise ``error``."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    options: dict[str, Any] = {
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        "max_pool_connections": max_pool_connections,
    }
    if not {"AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"} & os.environ.keys():
        options["retries"] = {"mode": "standard", "max_attempts": 5}
    try:
        return boto3.client(service, config=Config(**options))
    except BotoCoreError as exc:
        raise error(f"cannot create an {service.upper()} client: {exc}") from exc
