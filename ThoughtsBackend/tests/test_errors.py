"""Every failure answers JSON {"message": ...}: routing, methods, crashes, database outages."""

import importlib
import logging

import pytest

from thoughts_backend.app import create_app

from .uwsgi_process import free_port


@pytest.mark.parametrize(
    "path", ["/nowhere", "/api/thoughts/abc/", "/api/thoughts/1.5/", "/api/thoughts/-1/"]
)
def test_unknown_route_or_non_integer_id_is_404_json(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.is_json
    assert response.json["message"]


@pytest.mark.parametrize(
    "method, path",
    [("put", "/api/thoughts/"), ("delete", "/api/thoughts/"), ("post", "/api/thoughts/1/"), ("patch", "/")],
)
def test_wrong_method_is_405_json_with_allow(client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 405
    assert response.is_json
    assert response.json["message"]
    assert "GET" in response.headers["Allow"]


def test_unexpected_failure_is_500_json_without_trace(client, post_thought, monkeypatch, caplog):
    created = post_thought("boom")

    def explode(*_args):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(
        importlib.import_module("thoughts_backend.api_namespace"), "one_thought_or_404", explode
    )
    with caplog.at_level(logging.ERROR):
        response = client.get(f"/api/thoughts/{created['id']}/")
    assert response.status_code == 500
    assert response.is_json
    assert "secret internals" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    assert "secret internals" in caplog.text


def test_unreachable_database_is_503_with_retry_after(public_pem, unused_tcp_port):
    # A real connection attempt to a port where nothing listens.
    app = create_app(
        {
            "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{unused_tcp_port}/test",
            "PUBLIC_KEY": public_pem,
        }
    )
    response = app.test_client().get("/api/thoughts/")
    assert response.status_code == 503
    assert response.is_json
    assert response.headers["Retry-After"] == "1"
    assert "retry" in response.json["message"]


@pytest.fixture
def unused_tcp_port():
    return free_port()
