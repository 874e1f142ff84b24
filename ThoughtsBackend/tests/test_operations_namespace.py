"""Health, readiness and version endpoints."""

import pytest

from thoughts_backend.app import create_app


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_when_database_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready"}


def test_readyz_is_503_when_database_is_gone(public_pem):
    app = create_app(
        {"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:9/test", "PUBLIC_KEY": public_pem}
    )
    client = app.test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["status"] == "unavailable"
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("version, commit", [("1.4.2", "abc1234"), (None, None)])
def test_version_from_environment(client, monkeypatch, version, commit):
    for name, value in (("APP_VERSION", version), ("GIT_COMMIT", commit)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert client.get("/version").json == {"version": version or "unknown", "commit": commit or "unknown"}
