// SPDX-License-Identifier: Apache-2.0
// A tiny attestation authority for tests: plain HTTP on loopback (cvmd accepts http only for
// loopback authorities), serving OpenID metadata and a JWKS, and minting tokens shaped like
// MAA's (x-ms-runtime.keys carries the RSA key the released key is wrapped to).
import http from 'node:http';
import * as jose from 'jose';

export async function startAuthority() {
  const { publicKey, privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = await jose.exportJWK(publicKey);
  jwk.kid = 'test-authority-1';
  jwk.alg = 'RS256';
  jwk.use = 'sig';
  let issuer = '';
  const server = http.createServer((req, res) => {
    const send = (code, obj) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(obj));
    };
    if (req.url === '/.well-known/openid-configuration')
      return send(200, { issuer, jwks_uri: `${issuer}/certs` });
    if (req.url === '/certs') return send(200, { keys: [jwk] });
    return send(404, { error: 'not found' });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  issuer = `http://127.0.0.1:${server.address().port}`;
  return {
    issuer,
    // claims merged over MAA-like defaults; opts.expiresIn/iat override the lifetime
    async token(claims, opts = {}) {
      const now = Math.floor(Date.now() / 1000);
      const iat = opts.iat ?? now;
      return new jose.SignJWT({ 'x-ms-attestation-type': 'sevsnpvm', ...claims })
        .setProtectedHeader({ alg: 'RS256', kid: jwk.kid, typ: 'JWT' })
        .setIssuer(opts.issuer ?? issuer)
        .setIssuedAt(iat)
        .setNotBefore(iat)
        .setExpirationTime(opts.exp ?? now + 600)
        .sign(privateKey);
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
