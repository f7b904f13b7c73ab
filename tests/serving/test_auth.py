"""API keys: hashed storage, constant-time checks, rotation by file rewrite, the keys CLI."""

from __future__ import annotations

import hmac
import json
import logging
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from sevensense.cli import main
from sevensense.errors import (
    ConfigError,
    ForbiddenError,
    InvalidApiKeyError,
    MissingApiKeyError,
)
from sevensense.identity import ApiKeyRecord
from sevensense.serving.access.keys import (
    KeyStore,
    SecretKeySource,
    add_key,
    ensure_dev_key,
    generate_key,
    hash_key,
    key_file_path,
    key_from_headers,
    list_keys,
    require,
    revoke_key,
)
from sevensense.settings import ServingSettings, load_settings
from tests.serving.conftest import aws_client
from tests.test_cli import run


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def serving(tmp_path: Path) -> ServingSettings:
    return ServingSettings(state_dir=tmp_path / "state")


def test_generated_keys_are_random_and_only_their_hash_is_stored(
    serving: ServingSettings,
) -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(k.startswith("7s_") and len(k) >= 40 for k in keys)
    path = key_file_path(serving)
    key = add_key(path, "partner-a", ["embed"], rate_limit_per_s=5.0)
    text = path.read_text()
    assert key not in text
    assert hash_key(key) in text
    assert mode(path) == 0o600
    [record] = list_keys(path)
    assert record == ApiKeyRecord(
        id="partner-a", sha256=hash_key(key), scopes=["embed"], rate_limit_per_s=5.0
    )
    assert not list(path.parent.glob("*.tmp")), "temporary files left behind"


def test_authenticate_and_scopes(serving: ServingSettings) -> None:
    path = key_file_path(serving)
    partner = add_key(path, "partner-a")
    admin = add_key(path, "ops", ["embed", "read", "admin"])
    store = KeyStore.from_settings(serving)
    record = store.authenticate(partner)
    assert record.id == "partner-a" and record.scopes == ["embed", "read"]
    require(record, "embed")
    with pytest.raises(ForbiddenError) as forbidden:
        store.require(record, "admin")
    assert (forbidden.value.http_status, forbidden.value.code) == (403, "insufficient_scope")
    assert forbidden.value.to_dict()["details"]["required"] == "admin"
    store.require(store.authenticate(admin), "admin")

    for missing in (None, "", "   "):
        with pytest.raises(MissingApiKeyError) as exc:
            store.authenticate(missing)
        assert (exc.value.http_status, exc.value.code) == (401, "missing_api_key")
    with pytest.raises(InvalidApiKeyError) as invalid:
        store.authenticate(partner + "x")
    assert (invalid.value.http_status, invalid.value.code) == (401, "invalid_api_key")


def test_keys_from_settings_and_env_are_accepted(
    serving: ServingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    entry = {"id": "env-partner", "sha256": hash_key(key), "scopes": ["read"]}
    monkeypatch.setenv("SEVENSENSE_SERVING__API_KEYS", json.dumps([entry]))
    monkeypatch.setenv("SEVENSENSE_SERVING__STATE_DIR", str(serving.state_dir))
    settings = load_settings("default")
    store = KeyStore.from_settings(settings.serving)
    assert not key_file_path(settings.serving).exists()  # a missing file is no error
    assert store.authenticate(key).id == "env-partner"
    assert len(store) == 1


def test_comparison_goes_through_compare_digest_over_every_record(
    serving: ServingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = key_file_path(serving)
    keys = [add_key(path, f"p{i}") for i in range(5)]
    store = KeyStore.from_settings(serving)
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert store.authenticate(keys[0]).id == "p0"
    assert len(calls) == 5, "no early exit on the first match"
    assert all(len(a) == len(b) == 64 for a, b in calls), "hashes compared, not raw keys"
    assert all(keys[0].encode() not in (a, b) for a, b in calls)
    calls.clear()
    with pytest.raises(InvalidApiKeyError):
        store.authenticate("7s_wrong")
    assert len(calls) == 5


def test_rotation_by_file_rewrite_needs_no_new_store(serving: ServingSettings) -> None:
    path = key_file_path(serving)
    old = add_key(path, "partner-a")
    clock = FakeClock()
    store = KeyStore(path, reload_s=2.0, clock=clock)
    assert store.authenticate(old).id == "partner-a"

    new = add_key(path, "partner-a", replace=True)
    other = add_key(path, "partner-b")
    clock.now += 1.0  # within reload_s: the file is not even looked at yet
    assert store.authenticate(old).id == "partner-a"
    with pytest.raises(InvalidApiKeyError):
        store.authenticate(new)

    clock.now += 1.5
    assert store.authenticate(new).id == "partner-a"
    assert store.authenticate(other).id == "partner-b"
    with pytest.raises(InvalidApiKeyError):
        store.authenticate(old)

    revoke_key(path, "partner-b")
    clock.now += 2.0
    with pytest.raises(InvalidApiKeyError):
        store.authenticate(other)

    path.unlink()  # no file: no keys from it
    clock.now += 2.0
    with pytest.raises(InvalidApiKeyError):
        store.authenticate(new)


def test_operator_rewrite_of_the_file_is_picked_up(serving: ServingSettings) -> None:
    path = key_file_path(serving)
    path.parent.mkdir(parents=True)
    path.write_text('{"keys": []}')
    store = KeyStore(path, reload_s=0.0)
    key = generate_key()
    path.write_text(json.dumps({"keys": [{"id": "hand", "sha256": hash_key(key)}]}))
    assert store.authenticate(key).id == "hand"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"keys": [{"id": "a", "sha256": "abc"}]}', "keys.0.sha256"),
        ('{"keys": [{"id": "a", "sha256": "' + "0" * 64 + '", "scopes": ["root"]}]}', "scopes"),
        ('{"key": []}', "keys"),
        (
            json.dumps(
                {"keys": [{"id": "a", "sha256": "0" * 64}, {"id": "a", "sha256": "1" * 64}]}
            ),
            "duplicate key id 'a'",
        ),
    ],
)
def test_malformed_key_file_is_a_config_error(
    serving: ServingSettings, content: str, problem: str
) -> None:
    path = key_file_path(serving)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(ConfigError) as exc:
        KeyStore.from_settings(serving)
    assert str(path) in exc.value.message and problem in exc.value.message
    assert exc.value.details["path"] == str(path)
    with pytest.raises(ConfigError):
        add_key(path, "b")  # never overwrite a file nobody can parse


def test_malformed_rewrite_keeps_the_last_good_keys(
    serving: ServingSettings, caplog: pytest.LogCaptureFixture
) -> None:
    path = key_file_path(serving)
    key = add_key(path, "partner-a")
    store = KeyStore(path, reload_s=0.0)
    path.write_text('{"keys": [{"id": "partner-a"')
    with caplog.at_level(logging.ERROR, logger="sevensense.serving.access.keys"):
        assert store.authenticate(key).id == "partner-a"
    assert "keeping the previous 1 API keys" in caplog.text and str(path) in caplog.text
    path.unlink()
    add_key(path, "partner-b")
    with pytest.raises(InvalidApiKeyError):
        store.authenticate(key)


def test_add_and_revoke_errors(serving: ServingSettings) -> None:
    path = key_file_path(serving)
    add_key(path, "partner-a")
    with pytest.raises(ConfigError, match="already exists"):
        add_key(path, "partner-a")
    with pytest.raises(ConfigError, match="invalid API key record"):
        add_key(path, "bad id with spaces")
    with pytest.raises(ConfigError, match="invalid API key record"):
        add_key(path, "partner-b", rate_limit_per_s=0.0)
    with pytest.raises(ConfigError, match="no key with id 'nobody'"):
        revoke_key(path, "nobody")
    assert revoke_key(path, "partner-a").id == "partner-a"
    assert list_keys(path) == []
    assert list_keys(path.with_name("missing.json")) == []


def test_key_from_headers() -> None:
    assert key_from_headers("Bearer 7s_abc", None) == "7s_abc"
    assert key_from_headers("bearer   7s_abc ", None) == "7s_abc"
    assert key_from_headers(None, "7s_x") == "7s_x"
    assert key_from_headers("Bearer 7s_abc", "7s_x") == "7s_x"
    assert key_from_headers("Basic dXNlcg==", None) is None
    assert key_from_headers("Bearer ", "  ") is None
    assert key_from_headers(None, None) is None


def test_dev_key_only_when_nothing_is_configured(serving: ServingSettings) -> None:
    key = ensure_dev_key(serving)
    assert key is not None
    dev_file = serving.state_dir / "dev-api-key"
    assert dev_file.read_text().strip() == key
    assert mode(dev_file) == 0o600 and mode(key_file_path(serving)) == 0o600
    store = KeyStore.from_settings(serving)
    record = store.authenticate(key)
    assert record.id == "dev" and record.scopes == ["embed", "read", "admin"]
    assert ensure_dev_key(serving) == key  # idempotent
    assert [r.id for r in list_keys(key_file_path(serving))] == ["dev"]

    add_key(key_file_path(serving), "partner-a")
    assert ensure_dev_key(serving) == key  # still valid: still handed out
    revoke_key(key_file_path(serving), "dev")
    assert ensure_dev_key(serving) is None  # real keys exist: no new open door


def test_no_dev_key_when_settings_carry_keys(tmp_path: Path) -> None:
    record = ApiKeyRecord(id="env", sha256=hash_key(generate_key()))
    serving = ServingSettings(state_dir=tmp_path, api_keys=[record])
    assert ensure_dev_key(serving) is None
    assert not (tmp_path / "api_keys.json").exists()
    assert not (tmp_path / "dev-api-key").exists()


def test_dev_key_under_concurrent_worker_start(serving: ServingSettings) -> None:
    results: list[str | None] = []

    def start() -> None:
        results.append(ensure_dev_key(serving))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and results[0] is not None
    assert [r.id for r in list_keys(key_file_path(serving))] == ["dev"]


# --- CLI ----------------------------------------------------------------------------------


def invoke(state_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main, ["keys", *args], env={"SEVENSENSE_SERVING__STATE_DIR": str(state_dir)}
    )
    return result.exit_code, result.stdout, result.stderr


def test_cli_keys_add_list_revoke(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code, out, err = invoke(state, "add", "partner-a", "--scope", "embed", "--rate-limit", "5")
    assert code == 0, err
    key = out.strip()
    assert key.startswith("7s_") and "cannot be shown again" in err
    serving = ServingSettings(state_dir=state)
    record = KeyStore.from_settings(serving).authenticate(key)
    assert (record.id, record.scopes, record.rate_limit_per_s) == ("partner-a", ["embed"], 5.0)

    code, out, _ = invoke(state, "add", "ops", "--scope", "admin", "--scope", "read")
    assert code == 0
    code, out, _ = invoke(state, "list")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["partner-a", "ops"]
    assert "5/s" in lines[0] and "admin,read" in lines[1] and key not in out
    code, out, _ = invoke(state, "list", "--json")
    assert [r["id"] for r in json.loads(out)] == ["partner-a", "ops"]

    code, _, err = invoke(state, "add", "partner-a")
    assert code == 2 and "already exists" in err
    code, out, _ = invoke(state, "add", "partner-a", "--replace")
    assert code == 0 and out.strip() != key

    code, out, _ = invoke(state, "revoke", "partner-a")
    assert code == 0 and "revoked 'partner-a'" in out
    with pytest.raises(InvalidApiKeyError):
        KeyStore.from_settings(serving).authenticate(key)
    code, _, err = invoke(state, "revoke", "partner-a")
    assert code == 2 and "no key with id 'partner-a'" in err


def test_cli_keys_through_the_installed_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEVENSENSE_SERVING__STATE_DIR", str(tmp_path))
    proc = run("keys", "add", "partner-a")
    assert proc.returncode == 0, proc.stderr
    key = proc.stdout.strip()
    assert KeyStore(tmp_path / "api_keys.json").authenticate(key).id == "partner-a"
    proc = run("keys", "list")
    assert proc.returncode == 0 and proc.stdout.split()[0] == "partner-a"


def test_keys_from_secrets_manager_rotate_without_restart(moto_endpoint: str) -> None:
    client = aws_client("secretsmanager", moto_endpoint)
    first, second = generate_key(), generate_key()

    def document(*pairs: tuple[str, str]) -> str:
        return json.dumps({"keys": [{"id": i, "sha256": hash_key(k)} for i, k in pairs]})

    arn = client.create_secret(Name="sevensense/api-keys", SecretString=document(("p1", first)))[
        "ARN"
    ]
    now = [0.0]
    source = SecretKeySource(arn, client, refresh_s=60.0, clock=lambda: now[0])
    store = KeyStore(None, secret=source)
    assert store.authenticate(first).id == "p1"
    client.put_secret_value(SecretId=arn, SecretString=document(("p2", second)))
    assert store.authenticate(first).id == "p1"  # cached until the refresh period passes
    now[0] = 61.0
    assert store.authenticate(second).id == "p2"
    with pytest.raises(InvalidApiKeyError):
        store.authenticate(first)
    client.put_secret_value(SecretId=arn, SecretString="{not json")
    now[0] = 130.0
    assert store.authenticate(second).id == "p2"  # a bad rotation keeps the last good keys
    with pytest.raises(ConfigError):
        SecretKeySource(arn, client)
