// Minimal real OAuth2 authorization server for hydra-authz end-to-end tests.
//
// Built on oidc-provider (see package.json for the pinned version).
//
// * Binds to 127.0.0.1 only. Port from env PORT (default 0 = ephemeral).
// * Once listening, prints exactly one line to stdout: `READY <port>`.
//   Everything else (oidc-provider notices, request errors) goes to stderr.
// * Issuer: http://127.0.0.1:<port>
// * Access token TTL: env ACCESS_TOKEN_TTL seconds (default 3600).
// * Grants: client_credentials only. Tokens are opaque (resource indicators are
//   disabled, so no JWT access tokens can ever be issued) and must be
//   introspected at /token/introspection. Revocation at /token/revocation.
// * Clients (all client_secret_basic):
//     reader      / reader-secret      scope read_date
//     writer      / writer-secret      scope post_echo
//     hydra-authz / hydra-authz-secret resource server: may introspect any token,
//                                      cannot obtain tokens itself
// * Exits 0 on SIGTERM / SIGINT.
//
// Usage: npm ci && PORT=0 node server.mjs

import * as crypto from 'node:crypto';
import * as http from 'node:http';

// oidc-provider prints its notices with console.info (stdout). stdout is reserved
// for the single READY line, so route console.log/info to stderr before the
// library is loaded (it is imported dynamically below for that reason).
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);

const HOST = '127.0.0.1';

function intFromEnv(name, fallback, min) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) {
    console.error(`invalid ${name}=${JSON.stringify(raw)}: expected an integer >= ${min}`);
    process.exit(2);
  }
  return value;
}

const requestedPort = intFromEnv('PORT', 0, 0);
const accessTokenTTL = intFromEnv('ACCESS_TOKEN_TTL', 3600, 1);

const RESOURCE_SERVER = 'hydra-authz';

// Small unbounded in-memory adapter. The built-in development adapter is an LRU
// capped at 1000 entries (so tokens could silently vanish in a long test run)
// and prints a warning on startup.
function createAdapterFactory() {
  const store = new Map(); // key -> { payload, expiresAt (ms, Infinity if none) }
  const grants = new Map(); // grantId -> Set<key>
  const index = new Map(); // `uid:${uid}` / `userCode:${code}` -> id

  const get = (key) => {
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return entry.payload;
  };

  class Adapter {
    constructor(model) {
      this.model = model;
    }

    key(id) {
      return `${this.model}:${id}`;
    }

    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
      store.set(key, { payload, expiresAt });
      if (payload.grantId) {
        if (!grants.has(payload.grantId)) grants.set(payload.grantId, new Set());
        grants.get(payload.grantId).add(key);
      }
      if (payload.uid) index.set(`uid:${payload.uid}`, id);
      if (payload.userCode) index.set(`userCode:${payload.userCode}`, id);
    }

    async find(id) {
      return get(this.key(id));
    }

    async findByUid(uid) {
      const id = index.get(`uid:${uid}`);
      return id === undefined ? undefined : this.find(id);
    }

    async findByUserCode(userCode) {
      const id = index.get(`userCode:${userCode}`);
      return id === undefined ? undefined : this.find(id);
    }

    async consume(id) {
      const payload = get(this.key(id));
      if (payload) payload.consumed = Math.floor(Date.now() / 1000);
    }

    async destroy(id) {
      store.delete(this.key(id));
    }

    async revokeByGrantId(grantId) {
      for (const key of grants.get(grantId) ?? []) store.delete(key);
      grants.delete(grantId);
    }
  }

  return (model) => new Adapter(model);
}

function client(clientId, secret, scope) {
  return {
    client_id: clientId,
    client_secret: secret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    ...(scope ? { scope } : {}),
  };
}

// Route requests to the provider once it exists. It can only be built after the
// socket is bound, because the issuer contains the (possibly ephemeral) port.
let handler = (req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = http.createServer((req, res) => handler(req, res));

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen({ host: HOST, port: requestedPort }, resolve);
});
const { port } = server.address();

const { default: Provider, errors } = await import('oidc-provider');

// Signing keys for anything oidc-provider signs (nothing in the
// client_credentials flow does, since access tokens are opaque). Generated fresh
// on every start instead of using the library's well-known development keys.
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwks = { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' }] };

const provider = new Provider(`http://${HOST}:${port}`, {
  adapter: createAdapterFactory(),
  jwks,
  clients: [
    client('reader', 'reader-secret', 'read_date'),
    client('writer', 'writer-secret', 'post_echo'),
    // The resource server only introspects. It gets no grant types: with an
    // empty client `scope`, oidc-provider would not restrict which scopes it
    // could request, so letting it run client_credentials would let it mint
    // tokens for any scope.
    { ...client(RESOURCE_SERVER, 'hydra-authz-secret'), grant_types: [] },
  ],
  scopes: ['openid', 'offline_access', 'read_date', 'post_echo'],
  features: {
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // Default policy (9.x) lets any authenticated confidential client
      // introspect any token. Be explicit and stricter: the resource server may
      // introspect everything, other clients only their own tokens. A
      // disallowed caller gets {"active":false}.
      allowedPolicy: async (ctx, caller, token) => caller.clientId === RESOURCE_SERVER || caller.clientId === token.clientId,
    },
    revocation: {
      enabled: true,
      // Same as the 9.x default, minus its "you SHOULD change this" notice:
      // only the client a token was issued to may revoke it.
      allowedPolicy: async (ctx, caller, token) => {
        if (caller.clientId !== token.clientId) {
          throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        }
        return true;
      },
    },
    // Resource indicators would allow JWT access tokens; keep every access token opaque.
    resourceIndicators: { enabled: false },
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: false },
  },
  ttl: {
    AccessToken: () => accessTokenTTL,
    ClientCredentials: () => accessTokenTTL,
    Grant: () => 14 * 24 * 60 * 60,
    IdToken: () => 60 * 60,
    Interaction: () => 60 * 60,
    Session: () => 14 * 24 * 60 * 60,
  },
  findAccount: async () => undefined,
  renderError: async (ctx, out) => {
    ctx.type = 'json';
    ctx.body = out;
  },
});
provider.proxy = false;

provider.on('server_error', (ctx, err) => console.error('server_error', err));
for (const event of ['grant.error', 'introspection.error', 'revocation.error']) {
  provider.on(event, (ctx, err) => console.error(`${event}: ${err.error ?? err.name}: ${err.error_description ?? err.message}`));
}

handler = provider.callback();

let stopping = false;
function stop(signal) {
  if (stopping) return;
  stopping = true;
  console.error(`received ${signal}, shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));

process.stdout.write(`READY ${port}\n`);
