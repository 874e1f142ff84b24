"""The Swagger UI and spec: the contract users read and tools test against."""


def test_swagger_ui_at_root(client):
    response = client.get("/")
    assert response.status_code == 200
    assert b"swagger-ui" in response.data


def test_spec_declares_every_route(client):
    spec = client.get("/swagger.json").json
    assert set(spec["paths"]) == {
        "/api/thoughts/",
        "/api/thoughts/{thought_id}/",
        "/api/me/thoughts/",
        "/api/me/thoughts/{thought_id}/",
        "/admin/thoughts/{thought_id}/",
        "/healthz",
        "/readyz",
        "/version",
    }


def test_bearer_scheme_declared_on_token_routes(client):
    spec = client.get("/swagger.json").json
    assert spec["securityDefinitions"]["bearer"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "An RS256 token, written as: `Bearer <token>`",
    }
    paths = spec["paths"]
    for path, method in [
        ("/api/me/thoughts/", "get"),
        ("/api/me/thoughts/", "post"),
        ("/api/me/thoughts/{thought_id}/", "delete"),
        ("/admin/thoughts/{thought_id}/", "delete"),
    ]:
        assert paths[path][method]["security"] == [{"bearer": []}], (path, method)
    assert "security" not in paths["/api/thoughts/"]["get"]


def test_spec_documents_paging_and_total_count(client):
    operation = client.get("/swagger.json").json["paths"]["/api/thoughts/"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert parameters["limit"]["in"] == "query"
    assert {"limit", "offset", "search"} <= set(parameters)
    assert "X-Total-Count" in operation["responses"]["200"]["headers"]
