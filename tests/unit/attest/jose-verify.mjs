// SPDX-License-Identifier: Apache-2.0
// Verify an attestation token with an independent JOSE implementation (npm jose), the way a
// relying party does: OIDC discovery at the issuer, JWKS from jwks_uri, RS256, issuer check.
// Usage: NODE_PATH=.../node_modules node jose-verify.mjs ISSUER TOKEN   (exit 0 valid, 1 invalid)
// ES modules ignore NODE_PATH, so jose is loaded from it by path.
import { pathToFileURL } from 'node:url';

const jose = await import(pathToFileURL(`${process.env.NODE_PATH}/jose/dist/webapi/index.js`).href);

const [issuer, token] = process.argv.slice(2);
try {
  const meta = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  if (meta.issuer !== issuer) throw new Error(`discovery issuer ${meta.issuer} != ${issuer}`);
  const jwks = jose.createRemoteJWKSet(new URL(meta.jwks_uri));
  const { payload, protectedHeader } = await jose.jwtVerify(token, jwks, {
    issuer, algorithms: ['RS256'],
  });
  if (protectedHeader.alg !== 'RS256') throw new Error('alg');
  console.log(`jose: valid ${payload['x-ms-attestation-type']} token from ${payload.iss}`);
  process.exit(0);
} catch (e) {
  console.log(`jose: invalid: ${e.message}`);
  process.exit(1);
}
