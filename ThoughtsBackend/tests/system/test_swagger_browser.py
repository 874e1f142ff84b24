"""Swagger UI in a real browser: Debian's Chromium, driven by Playwright, against real uWSGI.

The browser opens the docs at /, sees the operations, authorizes with a bearer token and
writes a thought with "Try it out"; the API must then return that thought. Screenshots go
to test-artifacts/swagger-ui/ at the repository's top.

Needs `apt-get install -y chromium` and `npm ci --prefix browser`. Without them the test
skips on a laptop and fails in CI (CI=true).
"""

import json
import os
import shutil
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

from ..support import cannot_run
from ..uwsgi_process import ServedApp

pytestmark = pytest.mark.browser

REPOSITORY = Path(__file__).resolve().parents[3]
BROWSER_DIR = REPOSITORY / "browser"
DRIVER = BROWSER_DIR / "swagger_ui.mjs"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACT_DIR = Path(os.environ.get("TEST_ARTIFACT_DIR", REPOSITORY / "test-artifacts")) / "swagger-ui"
DRIVER_TIMEOUT_SECONDS = 120
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

EXPECTED_OPERATIONS = {
    "GET /api/thoughts/",
    "GET /api/thoughts/{thought_id}/",
    "GET /api/me/thoughts/",
    "POST /api/me/thoughts/",
    "DELETE /api/me/thoughts/{thought_id}/",
    "DELETE /admin/thoughts/{thought_id}/",
    "GET /healthz",
    "GET /readyz",
    "GET /version",
}


def require(available: bool, what: str) -> None:
    """A missing tool skips the test on a laptop; in CI it is a failure."""
    if available:
        return
    cannot_run(what)


@pytest.fixture(scope="module")
def browser_tools():
    require(
        os.access(CHROMIUM, os.X_OK),
        f"No Chromium at {CHROMIUM}: `apt-get install -y chromium` (Debian's package)",
    )
    require(shutil.which("node") is not None, "No node on PATH: install Node.js 20 or later")
    require(
        (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(),
        "playwright-core is not installed: `npm ci --prefix browser`",
    )


@pytest.fixture
def service(tmp_path, public_key_file):
    environment = {
        "PUBLIC_KEY_FILE": str(public_key_file),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    with ServedApp(environment) as served:
        yield served


def get_json(url: str, token: str):
    # Our own service on loopback, over http.
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_swagger_ui_lists_the_operations_authorizes_and_writes_a_thought(browser_tools, service, make_token):
    ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACT_DIR.glob("*.png"):
        old.unlink()
    username = f"browser-{uuid.uuid4().hex[:8]}"
    token = make_token(username)
    text = f"Written in Swagger UI by {username}"

    result = subprocess.run(
        ["node", str(DRIVER)],
        cwd=BROWSER_DIR,
        env={
            **os.environ,
            "BASE_URL": service.url,
            "BEARER_TOKEN": token,
            "THOUGHT_TEXT": text,
            "ARTIFACT_DIR": str(ARTIFACT_DIR),
            "CHROMIUM_PATH": CHROMIUM,
        },
        capture_output=True,
        text=True,
        timeout=DRIVER_TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, f"{result.stderr}\nscreenshot: {ARTIFACT_DIR / 'swagger-ui-failure.png'}"
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert seen["title"].startswith("ThoughtsBackend API")
    assert set(seen["operations"]) == EXPECTED_OPERATIONS
    assert seen["authorized"] is True
    # The Authorize dialog tells the user what to type (angle brackets once vanished as HTML).
    assert "Bearer <token>" in seen["authorizationHelp"]
    assert seen["responseStatus"] == 201
    assert seen["responseBody"]["text"] == text
    assert seen["responseBody"]["username"] == username
    # The UI sent the token the way a user typed it into Authorize.
    assert f"Authorization: Bearer {token}" in seen["curl"]
    # Everything came from the service itself, and the page ran without errors.
    assert seen["blockedRequests"] == []
    assert seen["pageErrors"] == []
    assert seen["consoleErrors"] == []

    # The API returns what the browser wrote.
    thought_id = seen["responseBody"]["id"]
    mine = get_json(f"{service.url}/api/me/thoughts/", token)
    assert [(t["id"], t["text"]) for t in mine] == [(thought_id, text)]
    assert get_json(f"{service.url}/api/thoughts/{thought_id}/", token)["username"] == username

    for name in ("swagger-ui-operations.png", "swagger-ui-try-it-out.png"):
        screenshot = ARTIFACT_DIR / name
        assert screenshot.read_bytes()[:8] == PNG_SIGNATURE
        assert screenshot.stat().st_size > 20_000, f"{screenshot} looks blank"
