"""``sevensense keys``: issue, list and revoke the API keys in the serving settings' key
file, and the quick-start key for a local service.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sevensense.cli.common import EXIT_FAILED, fail, settings_of
from sevensense.errors import SevensenseError


@click.group("keys")
def keys() -> None:
    """Issue, list and revoke API keys (the key file of the serving settings)."""


def _key_file(ctx: click.Context) -> Path:
    from sevensense.serving.access.keys import key_file_path

    return key_file_path(settings_of(ctx).serving)


@keys.command("add")
@click.argument("key_id", metavar="ID")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["embed", "read", "admin"]),
    help="repeatable; default: embed and read",
)
@click.option("--rate-limit", type=float, default=None, help="requests/s, overrides the default")
@click.option("--replace", is_flag=True, help="rotate: replace the key of an existing ID")
@click.pass_context
def keys_add(
    ctx: click.Context,
    key_id: str,
    scopes: tuple[str, ...],
    rate_limit: float | None,
    replace: bool,
) -> None:
    """Issue a key. It is printed once, here; only its SHA-256 is stored."""
    from sevensense.identity import PARTNER_SCOPES
    from sevensense.serving.access.keys import add_key

    path = _key_file(ctx.find_root())
    try:
        key = add_key(path, key_id, scopes or PARTNER_SCOPES, rate_limit, replace=replace)
    except SevensenseError as exc:
        fail(exc)
    click.echo(key)
    click.echo(f"key {key_id!r} stored in {path}; it cannot be shown again", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    """Key ids, scopes and rate limits (file keys and keys from the settings)."""
    from sevensense.serving.access.keys import list_keys

    settings = settings_of(ctx.find_root())
    path = _key_file(ctx.find_root())
    try:
        rows = [(r, "file") for r in list_keys(path)]
    except SevensenseError as exc:
        fail(exc)
    rows += [(r, "settings") for r in settings.serving.api_keys]
    if as_json:
        payload = [{**r.model_dump(mode="json"), "source": source} for r, source in rows]
        click.echo(json.dumps(payload, indent=2))
        return
    for record, source in rows:
        limit = f"{record.rate_limit_per_s:g}/s" if record.rate_limit_per_s else "default"
        click.echo(
            f"{record.id:<24} {','.join(record.scopes):<18} {limit:<10} "
            f"{record.sha256[:12]}  {source}"
        )
    if not rows:
        click.echo(f"no keys ({path} has none)", err=True)


@keys.command("revoke")
@click.argument("key_id", metavar="ID")
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Remove a key from the key file; running services drop it within seconds."""
    from sevensense.serving.access.keys import revoke_key

    path = _key_file(ctx.find_root())
    try:
        revoke_key(path, key_id)
    except SevensenseError as exc:
        if any(r.id == key_id for r in settings_of(ctx.find_root()).serving.api_keys):
            click.echo(
                f"error: key {key_id!r} comes from the settings (SEVENSENSE_SERVING__API_KEYS), "
                "not the key file; remove it there",
                err=True,
            )
            sys.exit(EXIT_FAILED)
        fail(exc)
    click.echo(f"revoked {key_id!r} in {path}")


@keys.command("dev")
@click.pass_context
def keys_dev(ctx: click.Context) -> None:
    """Print the local quick-start key, creating it only when no key is configured at all."""
    from sevensense.serving.access.keys import ensure_dev_key

    key = ensure_dev_key(settings_of(ctx.find_root()).serving)
    if key is None:
        click.echo(
            "keys are configured; no dev key is issued (see `sevensense keys list`)", err=True
        )
        sys.exit(EXIT_FAILED)
    click.echo(key)
