// A real OpenID provider (panva's oidc-provider, the lockfile's version) on 127.0.0.1, for
// ThoughtsBackend/tests/system/test_identity_provider_http.py. It issues RFC 9068 JWT access tokens
// by the client-credentials grant for a resource indicator, and ID tokens by the code flow.
//
//   node provider.mjs settings.json   # {"port": 4000, "issuer": "http://127.0.0.1:4000", "keys": [<private JWK>, ...]}
//
// The test drives two things the provider has no API for, under /test-control/ (loopback
// only, never part of a real deployment):
//   POST /test-control/keys  {"keys": [...]}  serve a new key list (the first signs)
//   GET  /test-control/stats                  {"jwks": <GET /jwks answered so far>}
// Changing keys builds a new Provider with the same issuer and clients: a rotation.
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const stats = { jwks: 0 };

const clients = [
  // Service accounts (client credentials). "short" gets 2-second tokens, to see them expire.
  { client_id: 'writer', client_secret: 'writer-secret', scope: 'write' },
  { client_id: 'moderator', client_secret: 'moderator-secret', scope: 'write admin' },
  { client_id: 'short', client_secret: 'short-secret', scope: 'write' },
].map((client) => ({ ...client, grant_types: ['client_credentials'], response_types: [], redirect_uris: [] }));
// A web application that signs a person in (code flow): its ID token is not an access token.
clients.push({
  client_id: 'web',
  client_secret: 'web-secret',
  grant_types: ['authorization_code'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1:9/callback'],
  scope: 'openid',
});

function makeProvider(keys) {
  const provider = new Provider(settings.issuer, {
    jwks: { keys },
    clients,
    scopes: ['openid', 'write', 'admin'],
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Any resource the client asks for is an API with this profile (another API's
        // audience is how the tests get a token for someone else).
        getResourceServerInfo: (ctx, resource, client) => ({
          scope: 'write admin',
          audience: resource,
          accessTokenTTL: client.clientId === 'short' ? 2 : 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    // The user name a resource server maps with TOKEN_USERNAME_CLAIM=preferred_username.
    extraTokenClaims: (ctx, token) => (token.clientId ? { preferred_username: `svc-${token.clientId}` } : undefined),
    findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub, preferred_username: sub }) }),
  });
  // Errors the test provokes on purpose are not news.
  provider.on('server_error', (ctx, error) => console.error('server_error', error));
  return provider;
}

let handle = makeProvider(settings.keys).callback();

function readBody(request) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => resolve(Buffer.concat(chunks).toString()));
    request.on('error', reject);
  });
}

const server = http.createServer(async (request, response) => {
  if (request.url === '/test-control/stats') {
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify(stats));
    return;
  }
  if (request.url === '/test-control/keys' && request.method === 'POST') {
    try {
      handle = makeProvider(JSON.parse(await readBody(request)).keys).callback();
      response.writeHead(204);
    } catch (error) {
      response.writeHead(400, { 'content-type': 'text/plain' });
      response.write(String(error));
    }
    response.end();
    return;
  }
  if (request.url === '/jwks') stats.jwks += 1;
  handle(request, response);
});

server.listen(settings.port, '127.0.0.1', () => {
  console.log(`listening on ${settings.issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
