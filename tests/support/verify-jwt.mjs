// Verify hydra-authz's identity JWTs ([upstream_jwt]) with an independent
// library: jose (panva/jose, a dependency of tests/oauth2-server's
// oidc-provider), against the live JWKS, as an upstream service would.
//
//   node verify-jwt.mjs <jwks_url> <issuer> <audience> [jwt ...]
//
// With JWTs as arguments: one JSON line per JWT, {"ok":true,"payload":{...},
// "header":{...}} or {"ok":false,"error":"..."}; the exit status is 1 when
// any failed. Without: one JWT per line on stdin, one answer line each,
// until end of input. The JWKS is fetched afresh for every JWT (no cache),
// so a key dropped from it stops verifying at once.
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

const require = createRequire(new URL('../oauth2-server/package.json', import.meta.url));
const { createLocalJWKSet, jwtVerify } = await import(pathToFileURL(require.resolve('jose')).href);

const [jwksUrl, issuer, audience, ...jwts] = process.argv.slice(2);
if (!jwksUrl || !issuer || !audience) {
  console.error('usage: node verify-jwt.mjs <jwks_url> <issuer> <audience> [jwt ...]');
  process.exit(2);
}

async function verify(jwt) {
  try {
    const r = await fetch(jwksUrl, { cache: 'no-store' });
    if (!r.ok) throw new Error(`GET ${jwksUrl}: ${r.status}`);
    const jwks = createLocalJWKSet(await r.json());
    const { payload, protectedHeader } = await jwtVerify(jwt, jwks, {
      issuer,
      audience,
      algorithms: ['ES256', 'EdDSA'],
    });
    return { ok: true, payload, header: protectedHeader };
  } catch (e) {
    return { ok: false, error: `${e.code ?? e.name}: ${e.message}` };
  }
}

if (jwts.length > 0) {
  let failed = false;
  for (const jwt of jwts) {
    const answer = await verify(jwt);
    failed ||= !answer.ok;
    console.log(JSON.stringify(answer));
  }
  process.exit(failed ? 1 : 0);
} else {
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() === '') continue;
    console.log(JSON.stringify(await verify(line.trim())));
  }
}
