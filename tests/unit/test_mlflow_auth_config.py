"""The local MLflow launcher's authentication switch (duelguard.registry.server.load_config): off by
default, on with MLFLOW_AUTH=basic-auth and the admin taken from the clients' own variables; a half or
unknown setting is an error that names what is missing (the server itself: tests/integration/test_locked_plane.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from duelguard.errors import ServingError
from duelguard.registry.server import ServerConfig, load_config


def _root(tmp_path: Path, auth: str | None) -> Path:
    env = tmp_path / "services" / "mlflow" / "server.env"
    env.parent.mkdir(parents=True)
    env.write_text("MLFLOW_PORT=5123\n" + (f"MLFLOW_AUTH={auth}\n" if auth else ""))
    return tmp_path


def test_auth_is_off_by_default_and_on_with_the_clients_credentials(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert not load_config(_root(tmp_path / "a", None)).auth
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-s3cret")
    cfg = load_config(_root(tmp_path / "b", "basic-auth"))
    assert cfg.auth and (cfg.auth_username, cfg.auth_password) == ("admin", "s3cret-s3cret")
    assert "s3cret" not in repr(cfg)  # never printed with the config
    assert cfg.auth_config_file == tmp_path / "b" / "mlflow" / "basic_auth-5123.ini"


def test_half_or_unknown_auth_settings_are_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(ServingError, match="MLFLOW_AUTH=basic-auth needs the admin credentials in MLFLOW_TRACKING_PASSWORD"):
        load_config(_root(tmp_path / "a", "basic-auth"))
    with pytest.raises(ServingError, match="MLFLOW_AUTH='on': expected off or basic-auth"):
        load_config(_root(tmp_path / "b", "on"))
    for user, password in (("admin", None), (None, "x"), ("", "x"), ("admin", "")):
        with pytest.raises(ServingError, match="needs both an admin user name and a password"):
            _ = ServerConfig(auth_username=user, auth_password=password).auth
