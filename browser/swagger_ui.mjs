// Drives Debian's Chromium through ThoughtsBackend's Swagger UI, as a person would:
// open the docs, see the operations, authorize with a bearer token, and write a thought
// with "Try it out". Run by ThoughtsBackend/tests/system/test_swagger_browser.py, which starts
// the service and checks through the API that the thought exists.
//
// Settings (environment):
//   BASE_URL        the service, on loopback, e.g. http://127.0.0.1:8000
//   BEARER_TOKEN    a token for the user who writes the thought
//   THOUGHT_TEXT    the text to write
//   ARTIFACT_DIR    where the screenshots go
//   CHROMIUM_PATH   the browser (default /usr/bin/chromium; never a downloaded one)
// Prints one JSON line with what it saw; exits non-zero, with a screenshot, on failure.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { chromium } from "playwright-core";

const STEP_TIMEOUT_MS = 15_000;
// Playwright adds --headless itself (headless: true); these are the rest.
const CHROMIUM_FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

function setting(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
}

const baseUrl = new URL(setting("BASE_URL"));
const token = setting("BEARER_TOKEN");
const thoughtText = setting("THOUGHT_TEXT");
const artifactDir = setting("ARTIFACT_DIR");
const chromiumPath = setting("CHROMIUM_PATH", "/usr/bin/chromium");

if (!["127.0.0.1", "localhost", "[::1]"].includes(baseUrl.hostname)) {
  throw new Error(`BASE_URL must be on loopback, not ${baseUrl.hostname}`);
}

const seen = { operations: [], blockedRequests: [], consoleErrors: [], pageErrors: [] };
const userDataDir = mkdtempSync(join(tmpdir(), "swagger-ui-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: chromiumPath,
  headless: true,
  args: CHROMIUM_FLAGS,
  viewport: { width: 1280, height: 1000 },
});
context.setDefaultTimeout(STEP_TIMEOUT_MS);

// Everything the UI needs is served by the service itself: anything else is a failure.
await context.route("**/*", (route) => {
  const url = new URL(route.request().url());
  if (url.origin === baseUrl.origin) {
    return route.continue();
  }
  seen.blockedRequests.push(route.request().url());
  return route.abort();
});

const page = context.pages()[0] ?? (await context.newPage());
page.on("console", (message) => {
  if (message.type() === "error") seen.consoleErrors.push(message.text());
});
page.on("pageerror", (error) => seen.pageErrors.push(String(error)));

try {
  await page.goto(new URL("/", baseUrl).href);
  await page.locator(".information-container .title").waitFor();
  seen.title = (await page.locator(".information-container .title").innerText()).trim();

  // The docs open collapsed: expand each tag to show its operations.
  const tags = page.locator(".opblock-tag-section");
  await tags.first().waitFor();
  for (const tag of await tags.all()) {
    if ((await tag.locator(".opblock").count()) === 0) {
      await tag.locator("h3.opblock-tag").click();
      await tag.locator(".opblock").first().waitFor();
    }
  }
  for (const operation of await page.locator(".opblock").all()) {
    const method = (await operation.locator(".opblock-summary-method").innerText()).trim();
    const path = await operation.locator(".opblock-summary-path").getAttribute("data-path");
    seen.operations.push(`${method} ${path}`);
  }
  await page.screenshot({ path: join(artifactDir, "swagger-ui-operations.png"), fullPage: true });

  // Authorize: the scheme is an apiKey in the Authorization header, typed as "Bearer <token>".
  await page.locator(".scheme-container button.authorize").click();
  const dialog = page.locator(".dialog-ux .modal-ux");
  // What the dialog tells a person to type (the scheme's description, as rendered).
  seen.authorizationHelp = (await dialog.locator(".auth-container").first().innerText()).trim();
  await dialog.locator("input").fill(`Bearer ${token}`);
  await dialog.locator(".auth-btn-wrapper button.authorize").click();
  await dialog.locator(".auth-btn-wrapper button", { hasText: "Logout" }).waitFor();
  seen.authorized = true;
  await dialog.screenshot({ path: join(artifactDir, "swagger-ui-authorized.png") });
  await dialog.locator("button.btn-done").click();
  await dialog.waitFor({ state: "detached" });

  // Try it out on POST /api/me/thoughts/.
  const post = page.locator(".opblock-post", {
    has: page.locator('.opblock-summary-path[data-path="/api/me/thoughts/"]'),
  });
  await post.locator(".opblock-summary").click();
  await post.locator("button.try-out__btn").click();
  await post.locator("textarea.body-param__text").fill(JSON.stringify({ text: thoughtText }));
  await post.locator("button.execute").click();
  const liveResponse = post.locator(".live-responses-table .response").first();
  await liveResponse.waitFor();
  seen.responseStatus = Number((await liveResponse.locator(".response-col_status").innerText()).trim());
  seen.responseBody = JSON.parse(await liveResponse.locator(".response-col_description pre").first().innerText());
  seen.curl = (await post.locator(".curl-command .curl").innerText()).trim();
  await post.screenshot({ path: join(artifactDir, "swagger-ui-try-it-out.png") });
  console.log(JSON.stringify(seen));
} catch (error) {
  await page.screenshot({ path: join(artifactDir, "swagger-ui-failure.png"), fullPage: true }).catch(() => {});
  console.error(`Swagger UI check failed: ${error.message}`);
  console.error(JSON.stringify(seen));
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
