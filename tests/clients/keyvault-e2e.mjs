// SPDX-License-Identifier: Apache-2.0
// End-to-end test: the official, unmodified @azure/keyvault-keys SDK against a real cvmd.
// Usage: node keyvault-e2e.mjs DEV_INFO_JSON [PURGE_PROTECTED_INFO_JSON]
// (run by tests/integration/keyvault-sdk.sh, which starts cvmd and sets NODE_EXTRA_CA_CERTS).
// Prints "N passed, N failed"; exits 1 on any failure.
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import { CryptographyClient, KeyClient } from '@azure/keyvault-keys';
import { ClientSecretCredential } from '@azure/identity';
import { startAuthority } from './test-authority.mjs';

const info = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const ppInfo = process.argv[3] ? JSON.parse(fs.readFileSync(process.argv[3], 'utf8')) : null;
const ca = fs.readFileSync(info.ca_cert);
const API = 'api-version=7.5';
const ROLE = {
  cryptoUser: '21dbd100-6940-42c2-9190-5d6cb909625b',
  cryptoOfficer: '515eb02d-2335-4d2d-92f2-b1cbdf9c3778',
  releaseUser: '21dbd100-6940-42c2-9190-5d6cb909625c',
  auditor: '2c18b078-7c48-4d3a-af88-5a3a1b3f82b3',
};

let passed = 0;
let failed = 0;
async function test(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL - ${name}: ${e?.stack ?? e}`);
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}
function eq(a, b, msg) {
  if (a !== b) throw new Error(`${msg}: expected ${JSON.stringify(b)}, got ${JSON.stringify(a)}`);
}
const b64u = (buf) => Buffer.from(buf).toString('base64url');
const unb64u = (s) => Buffer.from(s, 'base64url');
const rnd = () => crypto.randomBytes(4).toString('hex');

// Plain HTTPS request against cvmd (for role setup and exact status/error checks).
function call(base, caCert, method, path, { token, body, raw, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const url = new URL(base + path);
    const data = raw ?? (body === undefined ? undefined : JSON.stringify(body));
    const h = { ...headers };
    if (token) h.authorization = `Bearer ${token}`;
    if (data !== undefined) {
      h['content-type'] ??= 'application/json';
      h['content-length'] = Buffer.byteLength(data);
    }
    const req = https.request(url, { method, headers: h, ca: caCert }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json = null;
        try { json = text ? JSON.parse(text) : null; } catch { json = null; }
        resolve({ status: res.statusCode, headers: res.headers, json, text });
      });
    });
    req.on('error', reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}
const kv = (method, path, opts) => call(info.base_url, ca, method, path, opts);

async function tokenFor(base, caCert, tenant, clientId, secret) {
  const form = new URLSearchParams({
    grant_type: 'client_credentials', client_id: clientId, client_secret: secret,
    scope: 'https://managedhsm.azure.net/.default',
  }).toString();
  const r = await call(base, caCert, 'POST', `/${tenant}/oauth2/v2.0/token`, {
    raw: form, headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  if (r.status !== 200) throw new Error(`token: ${r.status} ${r.text}`);
  return r.json.access_token;
}

// Expect an exact status and Key Vault error code; message must mention `field` when given.
function expectError(r, status, code, field) {
  eq(r.status, status, `status (${r.text})`);
  eq(r.json?.error?.code, code, 'error.code');
  if (field) assert(r.json.error.message.includes(field), `message names ${field}: ${r.json.error.message}`);
}
async function expectSdkError(promise, status, code) {
  try {
    await promise;
  } catch (e) {
    eq(e.statusCode, status, `status (${e.message})`);
    if (code) eq(e.code, code, 'error code');
    return e;
  }
  throw new Error(`expected ${status} ${code}, call succeeded`);
}

// ---- identities and roles (separation of duties: the admin only manages roles) ----------
const adminToken = await tokenFor(info.base_url, ca, info.tenant, info.client_id, info.client_secret);
async function principal(name) {
  const r = await kv('PUT', `/opencvm/principals/${name}?${API}`, { token: adminToken, body: { kind: 'ServicePrincipal' } });
  if (r.status !== 201) throw new Error(`principal ${name}: ${r.status} ${r.text}`);
  return r.json;
}
async function assign(scope, role, oid) {
  const name = crypto.randomUUID();
  const prefix = scope === '/' ? '' : scope;
  const r = await kv('PUT', `${prefix}/providers/Microsoft.Authorization/roleAssignments/${name}?${API}`, {
    token: adminToken,
    body: { properties: { roleDefinitionId: `/providers/Microsoft.Authorization/roleDefinitions/${role}`, principalId: oid } },
  });
  if (r.status !== 201) throw new Error(`assign ${role}: ${r.status} ${r.text}`);
  return r.json;
}
const run = rnd();
const user = await principal(`app-${run}`);
const auditor = await principal(`auditor-${run}`);
await test('role assignments via REST (201, Managed HSM shape)', async () => {
  const a = await assign('/', ROLE.cryptoUser, user.object_id);
  eq(a.type, 'Microsoft.Authorization/roleAssignments', 'type');
  eq(a.properties.principalId, user.object_id, 'principalId');
  await assign('/', ROLE.cryptoOfficer, user.object_id);
  await assign('/keys', ROLE.releaseUser, user.object_id);
  await assign('/', ROLE.auditor, auditor.object_id);
  const list = await kv('GET', `/providers/Microsoft.Authorization/roleAssignments?${API}`, { token: adminToken });
  eq(list.status, 200, 'list status');
  assert(list.json.value.some((x) => x.properties.principalId === user.object_id), 'assignment listed');
  const defs = await kv('GET', `/providers/Microsoft.Authorization/roleDefinitions?${API}`, { token: adminToken });
  assert(defs.json.value.some((d) => d.name === ROLE.cryptoUser && d.properties.roleName === 'Managed HSM Crypto User'), 'built-in role listed');
});

// ---- credential -----------------------------------------------------------------------------
// @azure/identity pointed at cvmd: MSAL reads {authorityHost}/{tenant}/v2.0/.well-known/
// openid-configuration, then posts to its token_endpoint.
const credential = new ClientSecretCredential(info.tenant, user.client_id, user.client_secret, {
  authorityHost: info.base_url, disableInstanceDiscovery: true,
});
const clientOpts = { disableChallengeResourceVerification: true };
const client = new KeyClient(info.base_url, credential, clientOpts);
const cryptoFor = (key) => new CryptographyClient(key, credential, clientOpts);
const poll = { intervalInMs: 100 };

await test('ClientSecretCredential gets a token from cvmd', async () => {
  const t = await credential.getToken('https://managedhsm.azure.net/.default');
  assert(t && t.token.split('.').length === 3, 'JWT');
});

let rsa, ec, oct;
await test('createRsaKey/createEcKey/createOctKey', async () => {
  rsa = await client.createRsaKey(`rsa-${run}`, { keySize: 2048 });
  eq(rsa.keyType, 'RSA', 'rsa kty');
  assert(/^[0-9a-f]{32}$/.test(rsa.properties.version), 'version is 32 hex');
  assert(rsa.id.startsWith(`${info.base_url}/keys/rsa-${run}/`), `kid ${rsa.id}`);
  ec = await client.createEcKey(`ec-${run}`, { curve: 'P-384' });
  eq(ec.key.crv, 'P-384', 'curve');
  oct = await client.createOctKey(`oct-${run}`, { hsm: true, keySize: 256 });
  eq(oct.keyType, 'oct-HSM', 'oct kty');
});

await test('getKey (latest and by version)', async () => {
  const k = await client.getKey(rsa.name);
  eq(k.id, rsa.id, 'id');
  eq(Buffer.compare(Buffer.from(k.key.n), Buffer.from(rsa.key.n)), 0, 'modulus');
  const kv2 = await client.getKey(rsa.name, { version: rsa.properties.version });
  eq(kv2.properties.version, rsa.properties.version, 'version');
});

await test('listPropertiesOfKeys pages past 25 keys', async () => {
  const names = [];
  for (let i = 0; i < 27; i++) names.push((await client.createEcKey(`page-${run}-${i}`, { curve: 'P-256' })).name);
  const seen = new Set();
  let pages = 0;
  for await (const page of client.listPropertiesOfKeys().byPage({ maxPageSize: 25 })) {
    pages++;
    assert(page.length <= 25, 'page size');
    for (const p of page) seen.add(p.name);
  }
  assert(pages >= 2, `pages=${pages}`);
  for (const n of names) assert(seen.has(n), `listed ${n}`);
});

await test('listPropertiesOfKeyVersions', async () => {
  const v2 = await client.createRsaKey(rsa.name, { keySize: 2048 });
  const versions = [];
  for await (const p of client.listPropertiesOfKeyVersions(rsa.name)) versions.push(p.version);
  assert(versions.includes(rsa.properties.version) && versions.includes(v2.properties.version), 'both versions');
  rsa = v2;
});

await test('updateKeyProperties (tags, enabled) and a disabled key refuses operations (403)', async () => {
  const k = await client.createEcKey(`upd-${run}`, { curve: 'P-256' });
  const u = await client.updateKeyProperties(k.name, k.properties.version, { tags: { team: 'cvm' }, enabled: false });
  eq(u.properties.tags.team, 'cvm', 'tag');
  eq(u.properties.enabled, false, 'enabled');
  const digest = crypto.createHash('sha256').update('x').digest();
  await expectSdkError(cryptoFor(u).sign('ES256', digest), 403, 'Forbidden');
});

await test('wrapKey/unwrapKey RSA-OAEP-256', async () => {
  const cc = cryptoFor(rsa);
  const cek = crypto.randomBytes(32);
  const w = await cc.wrapKey('RSA-OAEP-256', cek);
  const u = await cc.unwrapKey('RSA-OAEP-256', w.result);
  eq(Buffer.compare(Buffer.from(u.result), cek), 0, 'unwrapped');
});

await test('encrypt/decrypt (RSA-OAEP-256 and A256GCM)', async () => {
  const pt = Buffer.from('confidential vm disk key');
  const cc = cryptoFor(rsa);
  const e = await cc.encrypt({ algorithm: 'RSA-OAEP-256', plaintext: pt });
  const d = await cc.decrypt({ algorithm: 'RSA-OAEP-256', ciphertext: e.result });
  eq(Buffer.from(d.result).toString(), pt.toString(), 'rsa round trip');
  const oc = cryptoFor(oct);
  const g = await oc.encrypt({ algorithm: 'A256GCM', plaintext: pt });
  const gd = await oc.decrypt({ algorithm: 'A256GCM', ciphertext: g.result, iv: g.iv, authenticationTag: g.authenticationTag });
  eq(Buffer.from(gd.result).toString(), pt.toString(), 'gcm round trip');
});

await test('sign/verify ES384 and PS256', async () => {
  const d384 = crypto.createHash('sha384').update('boot measurement').digest();
  const ecc = cryptoFor(ec);
  const s = await ecc.sign('ES384', d384);
  eq((await ecc.verify('ES384', d384, s.result)).result, true, 'ES384 verifies');
  const bad = Buffer.from(d384); bad[0] ^= 1;
  eq((await ecc.verify('ES384', bad, s.result)).result, false, 'ES384 tampered digest');
  const d256 = crypto.createHash('sha256').update('boot measurement').digest();
  const rc = cryptoFor(rsa);
  const p = await rc.sign('PS256', d256);
  eq((await rc.verify('PS256', d256, p.result)).result, true, 'PS256 verifies');
  // and the service's own verify route agrees
  const sdkTok = await credential.getToken('https://managedhsm.azure.net/.default');
  const r = await kv('POST', `/keys/${rsa.name}/${rsa.properties.version}/verify?${API}`, {
    token: sdkTok.token, body: { alg: 'PS256', digest: b64u(d256), value: b64u(p.result) },
  });
  eq(r.status, 200, 'verify status');
  eq(r.json.value, true, 'service verify');
});

await test('beginDeleteKey -> getDeletedKey -> beginRecoverDeletedKey', async () => {
  const k = await client.createEcKey(`del-${run}`, { curve: 'P-256' });
  const dp = await client.beginDeleteKey(k.name, poll);
  const deleted = await dp.pollUntilDone();
  assert(deleted.properties.recoveryId.endsWith(`/deletedkeys/${k.name}`), 'recoveryId');
  const g = await client.getDeletedKey(k.name);
  assert(g.properties.scheduledPurgeDate > g.properties.deletedOn, 'scheduledPurgeDate');
  await expectSdkError(client.getKey(k.name), 404, 'KeyNotFound');
  const rp = await client.beginRecoverDeletedKey(k.name, poll);
  const rec = await rp.pollUntilDone();
  eq(rec.id, k.id, 'recovered id');
  eq((await client.getKey(k.name)).id, k.id, 'usable again');
});

await test('purgeDeletedKey (204)', async () => {
  const k = await client.createEcKey(`purge-${run}`, { curve: 'P-256' });
  await (await client.beginDeleteKey(k.name, poll)).pollUntilDone();
  await client.purgeDeletedKey(k.name);
  await expectSdkError(client.getDeletedKey(k.name), 404, 'KeyNotFound');
});

await test('backupKey/restoreKeyBackup', async () => {
  const k = await client.createRsaKey(`bak-${run}`, { keySize: 2048 });
  const blob = await client.backupKey(k.name);
  assert(blob.length > 100, 'blob');
  await (await client.beginDeleteKey(k.name, poll)).pollUntilDone();
  await client.purgeDeletedKey(k.name);
  const r = await client.restoreKeyBackup(blob);
  eq(r.id, k.id, 'restored id');
  const cek = crypto.randomBytes(32);
  const cc = cryptoFor(r);
  const w = await cc.wrapKey('RSA-OAEP-256', cek);
  eq(Buffer.compare(Buffer.from((await cc.unwrapKey('RSA-OAEP-256', w.result)).result), cek), 0, 'restored key works');
  const tampered = Buffer.from(blob); tampered[tampered.length - 5] ^= 0x55;
  await expectSdkError(client.restoreKeyBackup(tampered), 400, 'BadParameter');
});

await test('rotateKey and get/updateKeyRotationPolicy', async () => {
  const k = await client.createEcKey(`rot-${run}`, { curve: 'P-256' });
  const r = await client.rotateKey(k.name);
  assert(r.properties.version !== k.properties.version, 'new version');
  eq(r.name, k.name, 'same name');
  const p = await client.updateKeyRotationPolicy(k.name, {
    lifetimeActions: [{ action: 'Rotate', timeBeforeExpiry: 'P30D' }], expiresIn: 'P90D',
  });
  eq(p.expiresIn, 'P90D', 'expiresIn');
  const g = await client.getKeyRotationPolicy(k.name);
  eq(g.lifetimeActions[0].action, 'Rotate', 'action');
  eq(g.lifetimeActions[0].timeBeforeExpiry, 'P30D', 'trigger');
});

await test('scheduler rotates a key that is due (timeBeforeExpiry), negative twin stays', async () => {
  const soon = new Date(Date.now() + 24 * 3600 * 1000); // expires in a day: P7D before is past
  const due = await client.createEcKey(`due-${run}`, { curve: 'P-256', expiresOn: soon });
  const later = await client.createEcKey(`later-${run}`, { curve: 'P-256', expiresOn: new Date(Date.now() + 60 * 24 * 3600 * 1000) });
  for (const k of [due, later])
    await client.updateKeyRotationPolicy(k.name, { lifetimeActions: [{ action: 'Rotate', timeBeforeExpiry: 'P7D' }] });
  const versions = async (name) => {
    const v = [];
    for await (const p of client.listPropertiesOfKeyVersions(name)) v.push(p.version);
    return v;
  };
  let n = 1;
  for (let i = 0; i < 40 && n < 2; i++) {
    await new Promise((r) => setTimeout(r, 500));
    n = (await versions(due.name)).length;
  }
  eq(n, 2, 'due key rotated by the scheduler');
  const latest = await client.getKey(due.name);
  assert(latest.properties.version !== due.properties.version, 'latest is the new version');
  eq((await versions(later.name)).length, 1, 'key not yet due keeps one version');
});

await test('getRandomBytes', async () => {
  const b = await client.getRandomBytes(16);
  eq(b.length, 16, 'length');
  await expectSdkError(client.getRandomBytes(129), 400, 'BadParameter');
});

// ---- Secure Key Release -----------------------------------------------------------------------
const authority = await startAuthority();
const other = await startAuthority(); // not named by any policy
const wrapping = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const wrapJwk = { ...wrapping.publicKey.export({ format: 'jwk' }), kid: 'TpmEphemeralEncryptionKey', key_ops: ['encrypt'] };
const runtime = { keys: [wrapJwk] };
const policy = {
  version: '1.0.0',
  anyOf: [{ authority: authority.issuer, allOf: [
    { claim: 'x-ms-attestation-type', equals: 'sevsnpvm' },
    { claim: 'x-ms-isolation-tee.x-ms-compliance-status', equals: 'azure-compliant-cvm' },
  ] }],
};
const goodClaims = { 'x-ms-isolation-tee': { 'x-ms-compliance-status': 'azure-compliant-cvm' }, 'x-ms-runtime': runtime };
const enc = (o) => new TextEncoder().encode(JSON.stringify(o));
let rel;
await test('releaseKey: unwrap key_hsm in the test and prove it is the key', async () => {
  rel = await client.createRsaKey(`rel-${run}`, { keySize: 2048, exportable: true, releasePolicy: { encodedPolicy: enc(policy) } });
  const token = await authority.token(goodClaims);
  const res = await client.releaseKey(rel.name, token, { algorithm: 'RSA_AES_KEY_WRAP_256', nonce: undefined });
  const [h, p] = res.value.split('.');
  const header = JSON.parse(unb64u(h));
  eq(header.alg, 'RS256', 'JWS alg');
  // JWS signature by the release-signing certificate in x5c
  const cert = new crypto.X509Certificate(Buffer.from(header.x5c[0], 'base64'));
  const [hh, pp, ss] = res.value.split('.');
  assert(crypto.verify('sha256', Buffer.from(`${hh}.${pp}`), cert.publicKey, unb64u(ss)), 'JWS signature');
  const payload = JSON.parse(unb64u(p));
  eq(payload.request.enc, 'RSA_AES_KEY_WRAP_256', 'request.enc');
  const keyHsm = JSON.parse(unb64u(payload.response.key.key.key_hsm));
  eq(keyHsm.header.kid, 'TpmEphemeralEncryptionKey', 'wrapping kid');
  const ct = unb64u(keyHsm.ciphertext);
  const transfer = crypto.privateDecrypt({ key: wrapping.privateKey, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, ct.subarray(0, 256));
  const kwp = crypto.createDecipheriv('id-aes256-wrap-pad', transfer, Buffer.from('A65959A6', 'hex'));
  const der = Buffer.concat([kwp.update(ct.subarray(256)), kwp.final()]);
  const priv = crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  eq(priv.export({ format: 'jwk' }).n, b64u(rel.key.n), 'released modulus equals the key');
  // sign with the released key, verify with the service
  const message = Buffer.from('released');
  const digest = crypto.createHash('sha256').update(message).digest();
  const sig = crypto.sign('sha256', message, { key: priv, padding: crypto.constants.RSA_PKCS1_PADDING });
  const sdkTok = await credential.getToken('https://managedhsm.azure.net/.default');
  const r = await kv('POST', `/keys/${rel.name}/${rel.properties.version}/verify?${API}`, {
    token: sdkTok.token, body: { alg: 'RS256', digest: b64u(digest), value: b64u(sig) },
  });
  eq(r.json?.value, true, `service verifies a signature made with the released key (${r.text})`);
});

const userToken = async () => (await credential.getToken('https://managedhsm.azure.net/.default')).token;
const release = async (name, target, body = {}) => kv('POST', `/keys/${name}/release?${API}`, { token: await userToken(), body: { target, ...body } });

// ---- negative tests: exact status and error code ---------------------------------------------
await test('no token: 401 Unauthorized + challenge (empty-body probe)', async () => {
  const r = await kv('POST', `/keys/x-${run}/create?${API}`);
  expectError(r, 401, 'Unauthorized');
  const h = r.headers['www-authenticate'];
  assert(h === `Bearer authorization="${info.base_url}/${info.tenant}", resource="https://managedhsm.azure.net"`, `challenge ${h}`);
  const bad = await kv('GET', `/keys?${API}`, { token: 'not.a.token' });
  expectError(bad, 401, 'Unauthorized');
  assert(bad.headers['www-authenticate'], 'challenge on invalid token');
});

await test('token endpoint errors in Entra shape', async () => {
  const post = (form) => kv('POST', `/${info.tenant}/oauth2/v2.0/token`, {
    raw: new URLSearchParams(form).toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  const scope = 'https://managedhsm.azure.net/.default';
  let r = await post({ grant_type: 'client_credentials', client_id: user.client_id, client_secret: 'wrong', scope });
  eq(r.status, 401, `wrong secret (${r.text})`);
  eq(r.json.error, 'invalid_client', 'error');
  assert(r.json.error_description && r.json.trace_id && r.json.correlation_id && r.json.timestamp, 'Entra fields');
  r = await post({ grant_type: 'password', client_id: user.client_id, client_secret: user.client_secret, scope });
  eq(r.status, 400, 'grant');
  eq(r.json.error, 'unsupported_grant_type', 'error');
  r = await post({ grant_type: 'client_credentials', client_secret: user.client_secret, scope });
  eq(r.status, 400, 'missing client_id');
  eq(r.json.error, 'invalid_request', 'error');
  r = await post({ grant_type: 'client_credentials', client_id: user.client_id, client_secret: user.client_secret, scope });
  eq(r.status, 200, 'good credentials');
  eq(r.json.token_type, 'Bearer', 'token_type');
});

await test('wrong role: 403 Forbidden (auditor creates; administrator uses keys)', async () => {
  const at = await tokenFor(info.base_url, ca, info.tenant, auditor.client_id, auditor.client_secret);
  expectError(await kv('POST', `/keys/x-${run}/create?${API}`, { token: at, body: { kty: 'EC' } }), 403, 'Forbidden');
  eq((await kv('GET', `/keys/${ec.name}?${API}`, { token: at })).status, 200, 'auditor may read');
  expectError(await kv('POST', `/keys/x-${run}/create?${API}`, { token: adminToken, body: { kty: 'EC' } }), 403, 'Forbidden');
  // the auditor may not grant itself more
  expectError(await kv('PUT', `/providers/Microsoft.Authorization/roleAssignments/${crypto.randomUUID()}?${API}`, {
    token: at, body: { properties: { roleDefinitionId: ROLE.cryptoUser, principalId: auditor.object_id } },
  }), 403, 'Forbidden');
});

await test('unknown key: 404 KeyNotFound', async () => {
  expectError(await kv('GET', `/keys/nope-${run}?${API}`, { token: await userToken() }), 404, 'KeyNotFound');
  // a name no key can have (too long, bad characters) is still a clean client error
  const r = await kv('GET', `/keys/${'x'.repeat(2000)}?${API}`, { token: await userToken() });
  assert(r.status === 400 || r.status === 404, `long name: ${r.status} ${r.text.slice(0, 200)}`);
  const r2 = await kv('POST', `/keys/bad_name!/create?${API}`, { token: await userToken(), body: { kty: 'EC' } });
  expectError(r2, 400, 'BadParameter');
  expectError(await kv('GET', `/deletedkeys/nope-${run}?${API}`, { token: await userToken() }), 404, 'KeyNotFound');
});

await test('bad requests: 400 BadParameter naming the field', async () => {
  const t = await userToken();
  const path = `/keys/bad-${run}/create?${API}`;
  expectError(await kv('POST', path, { token: t, raw: '{"kty": "RSA",' }), 400, 'BadParameter', 'body');
  expectError(await kv('POST', path, { token: t, body: { kty: 5 } }), 400, 'BadParameter', 'kty');
  expectError(await kv('POST', path, { token: t, body: { kty: 'RSA', key_size: 'big' } }), 400, 'BadParameter', 'key_size');
  expectError(await kv('POST', path, { token: t, body: { kty: 'RSA', attributes: { exp: 'soon' } } }), 400, 'BadParameter', 'attributes.exp');
  expectError(await kv('POST', `/keys/${rsa.name}/${rsa.properties.version}/sign?${API}`, { token: t, body: { alg: 'PS256', value: 7 } }), 400, 'BadParameter', 'value');
  expectError(await kv('POST', path, { token: t, raw: JSON.stringify({ kty: 'RSA', pad: 'x'.repeat(300 * 1024) }) }), 413, 'BadParameter', 'body');
  expectError(await kv('GET', `/keys/${rsa.name}`, { token: t }), 400, 'BadParameter', 'api-version');
  expectError(await kv('GET', `/keys/${rsa.name}?api-version=2016-10-01`, { token: t }), 400, 'BadParameter', 'api-version');
});

await test('release: token from an unknown authority -> 403 Forbidden', async () => {
  const tok = await other.token(goodClaims);
  expectError(await release(rel.name, tok), 403, 'Forbidden', 'authority');
});
await test('release: expired token -> 400 BadParameter', async () => {
  const now = Math.floor(Date.now() / 1000);
  const tok = await authority.token(goodClaims, { iat: now - 7200, exp: now - 3600 });
  expectError(await release(rel.name, tok), 400, 'BadParameter');
});
await test('release: token failing the policy -> 403 Forbidden', async () => {
  const tok = await authority.token({ ...goodClaims, 'x-ms-isolation-tee': { 'x-ms-compliance-status': 'debug' } });
  expectError(await release(rel.name, tok), 403, 'Forbidden');
});
await test('release: non-exportable key -> 403 Forbidden', async () => {
  const tok = await authority.token(goodClaims);
  expectError(await release(rsa.name, tok), 403, 'Forbidden');
});
await test('release: nonce must match the token', async () => {
  const tok = await authority.token({ ...goodClaims, nonce: 'n-1' });
  expectError(await release(rel.name, tok, { nonce: 'n-2' }), 403, 'Forbidden');
  const ok = await authority.token({ ...goodClaims, nonce: 'n-3' });
  eq((await release(rel.name, ok, { nonce: 'n-3' })).status, 200, 'matching nonce');
});
await test('immutable release policy cannot change -> 400 BadParameter', async () => {
  const k = await client.createRsaKey(`imm-${run}`, { keySize: 2048, exportable: true, releasePolicy: { encodedPolicy: enc(policy), immutable: true } });
  const other2 = { ...policy, anyOf: [{ ...policy.anyOf[0], allOf: [policy.anyOf[0].allOf[0]] }] };
  await expectSdkError(client.updateKeyProperties(k.name, k.properties.version, { releasePolicy: { encodedPolicy: enc(other2) } }), 400, 'BadParameter');
});

if (ppInfo) {
  await test('purge of a purge-protected key -> 403 Forbidden', async () => {
    const pca = fs.readFileSync(ppInfo.ca_cert);
    const at = await tokenFor(ppInfo.base_url, pca, ppInfo.tenant, ppInfo.client_id, ppInfo.client_secret);
    const mk = async (name) => {
      const r = await call(ppInfo.base_url, pca, 'PUT', `/opencvm/principals/${name}?${API}`, { token: at, body: {} });
      if (r.status !== 201) throw new Error(`principal: ${r.text}`);
      return r.json;
    };
    const off = await mk(`officer-${run}`);
    for (const role of [ROLE.cryptoUser, ROLE.cryptoOfficer]) {
      const r = await call(ppInfo.base_url, pca, 'PUT', `/providers/Microsoft.Authorization/roleAssignments/${crypto.randomUUID()}?${API}`, {
        token: at, body: { properties: { roleDefinitionId: role, principalId: off.object_id } },
      });
      eq(r.status, 201, `assign (${r.text})`);
    }
    const ot = await tokenFor(ppInfo.base_url, pca, ppInfo.tenant, off.client_id, off.client_secret);
    const pp = (m, p, o = {}) => call(ppInfo.base_url, pca, m, p, { token: ot, ...o });
    eq((await pp('POST', `/keys/pp-${run}/create?${API}`, { body: { kty: 'EC', crv: 'P-256' } })).status, 200, 'create');
    const d = await pp('DELETE', `/keys/pp-${run}?${API}`);
    eq(d.status, 200, 'delete');
    assert(!d.json.attributes.recoveryLevel.includes('Purgeable'), `recoveryLevel ${d.json.attributes.recoveryLevel}`);
    expectError(await pp('DELETE', `/deletedkeys/pp-${run}?${API}`), 403, 'Forbidden');
    eq((await pp('POST', `/deletedkeys/pp-${run}/recover?${API}`)).status, 200, 'recover still works');
  });
}

await authority.close();
await other.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
