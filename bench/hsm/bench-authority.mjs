// SPDX-License-Identifier: Apache-2.0
// Attestation authority for the release benchmark: writes the release policy and N release
// bodies (each with a fresh token; a token releases once), then keeps serving its JWKS until
// killed. Usage: node bench-authority.mjs OUT_DIR N
import crypto from 'node:crypto';
import fs from 'node:fs';
import { startAuthority } from '../../tests/clients/test-authority.mjs';

const [dir, nStr] = process.argv.slice(2);
const n = Number(nStr);
const authority = await startAuthority();
const wrapping = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...wrapping.publicKey.export({ format: 'jwk' }), kid: 'TpmEphemeralEncryptionKey' };
const policy = { version: '1.0.0', anyOf: [{ authority: authority.issuer, allOf: [{ claim: 'x-ms-attestation-type', equals: 'sevsnpvm' }] }] };
fs.writeFileSync(`${dir}/policy.json`, JSON.stringify(policy));
const lines = [];
for (let i = 0; i < n; i++) {
  const t = await authority.token({ 'x-ms-runtime': { keys: [jwk] }, jti: String(i) }, { exp: Math.floor(Date.now() / 1000) + 3600 });
  lines.push(JSON.stringify({ target: t, enc: 'RSA_AES_KEY_WRAP_256' }));
}
fs.writeFileSync(`${dir}/release-bodies.txt`, lines.join('\n') + '\n');
fs.writeFileSync(`${dir}/authority.ready`, authority.issuer);
process.on('SIGTERM', async () => { await authority.close(); process.exit(0); });
