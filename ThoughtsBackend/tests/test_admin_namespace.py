"""/admin/thoughts/<id>/: only tokens with the 'admin' scope may delete."""

import pytest


def test_admin_deletes_anyones_thought(client, post_thought, auth):
    created = post_thought("spam", username="bob")
    response = client.delete(f"/admin/thoughts/{created['id']}/", headers=auth("moderator", admin=True))
    assert response.status_code == 204
    assert client.get(f"/api/thoughts/{created['id']}/").status_code == 404


def test_admin_scope_among_others(client, post_thought, auth):
    created = post_thought("spam")
    headers = auth("moderator", scope="read admin write")
    assert client.delete(f"/admin/thoughts/{created['id']}/", headers=headers).status_code == 204


def test_admin_delete_missing_is_404(client, auth):
    response = client.delete("/admin/thoughts/777/", headers=auth("moderator", admin=True))
    assert response.status_code == 404
    assert response.is_json


def test_admin_without_token_is_401(client, post_thought):
    created = post_thought("stays")
    response = client.delete(f"/admin/thoughts/{created['id']}/")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get(f"/api/thoughts/{created['id']}/").status_code == 200


@pytest.mark.parametrize("scope", [None, "", "read write", "administrator", "Admin"])
def test_admin_with_non_admin_token_is_403(client, post_thought, auth, scope):
    created = post_thought("stays")
    claims = {} if scope is None else {"scope": scope}
    response = client.delete(f"/admin/thoughts/{created['id']}/", headers=auth("alice", **claims))
    assert response.status_code == 403
    assert "admin" in response.json["message"]
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="thoughts", error="insufficient_scope", scope="admin"'
    )
    assert client.get(f"/api/thoughts/{created['id']}/").status_code == 200


def test_admin_with_invalid_token_is_401(client, post_thought):
    created = post_thought("stays")
    response = client.delete(f"/admin/thoughts/{created['id']}/", headers={"Authorization": "Bearer x.y.z"})
    assert response.status_code == 401


class TestTheAdminScopeSetting:
    """TOKEN_ADMIN_SCOPE names the scope that opens /admin/, in `scope` or in `scp`."""

    @pytest.fixture
    def app_overrides(self, app_overrides):
        return {**app_overrides, "TOKEN_ADMIN_SCOPE": "thoughts:admin"}

    def test_admin_alone_is_403_naming_the_configured_scope(self, client, post_thought, auth):
        created = post_thought("stays")
        response = client.delete(f"/admin/thoughts/{created['id']}/", headers=auth("root", admin=True))
        assert response.status_code == 403
        assert "'thoughts:admin'" in response.json["message"]
        assert response.headers["WWW-Authenticate"].endswith(
            'error="insufficient_scope", scope="thoughts:admin"'
        )
        assert client.get(f"/api/thoughts/{created['id']}/").status_code == 200

    @pytest.mark.parametrize("claims", [{"scope": "read thoughts:admin"}, {"scp": ["thoughts:admin"]}])
    def test_the_configured_scope_deletes(self, client, post_thought, auth, claims):
        created = post_thought("spam")
        response = client.delete(f"/admin/thoughts/{created['id']}/", headers=auth("moderator", **claims))
        assert response.status_code == 204
