// Authorization server for the end-to-end tests: oidc-provider with the client-credentials
// grant and resource indicators (which make it issue JWT access tokens), on 127.0.0.1.
//
// Env: IDP_PORT, BASIC_SECRET, POST_SECRET, SHORT_TTL (seconds, for the short-lived resource),
// FLEET_TTL (seconds, for the resource that replicas share through Redis);
// RSA_JWK and EC_JWK (public keys of the private_key_jwt clients), HMAC_SECRET; MTLS_CA (the
// CA of tls_client_auth certificates) and SELF_SIGNED_JWK (self_signed_tls_client_auth).
// GET /__stats answers {"<client_id> <resource>": count} of successful token requests, so the
// test can check that tokenproxy fetched exactly one token per upstream.
import { X509Certificate, randomBytes } from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const port = Number(process.env.IDP_PORT);
const caCert = new X509Certificate(process.env.MTLS_CA);
const issuer = `http://127.0.0.1:${port}`;
const shortTtl = Number(process.env.SHORT_TTL || 4);
const fleetTtl = Number(process.env.FLEET_TTL || 6);

const resources = {
  'https://inventory.e2e.test': { scope: 'inventory:read inventory:write', ttl: 3600 },
  'https://orders.e2e.test': { scope: 'orders:read', ttl: 3600 },
  'https://authfail.e2e.test': { scope: 'authfail:read', ttl: 3600 },
  'https://short.e2e.test': { scope: 'short:read', ttl: shortTtl },
  'https://grpc.e2e.test': { scope: 'grpc:call', ttl: 3600 },
  'https://ws.e2e.test': { scope: 'ws:chat', ttl: shortTtl },
  // Four APIs, each called through five upstreams that share one token (sharing_checks.py).
  ...Object.fromEntries([1, 2, 3, 4].map((g) => [`https://g${g}.e2e.test`, { scope: `g${g}:read`, ttl: 3600 }])),
  // Replicas sharing tokens through Redis (cache_checks.py).
  'https://fleet.e2e.test': { scope: 'fleet:read', ttl: fleetTtl },
  'https://fleet2.e2e.test': { scope: 'fleet:read', ttl: 3600 },
  // The fleets on Sentinel, on Cluster, and the 100 replicas (ha_checks.py).
  ...Object.fromEntries(['sentinel', 'cluster', 'hundred', 'hatls'].map((f) => [`https://${f}.e2e.test`, { scope: 'fleet:read', ttl: fleetTtl }])),
  'https://fleettls.e2e.test': { scope: 'fleet:read', ttl: 3600 },
  // DPoP-bound tokens (cnf.jkt), checked by dpop_server.py (dpop_checks.py).
  'https://dpop.e2e.test': { scope: 'dpop:read', ttl: 3600 },
};
const allScopes = Object.values(resources).flatMap((r) => r.scope.split(' '));

const client = (id, secret, method) => ({
  client_id: id,
  client_secret: secret,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: method,
  scope: allScopes.join(' '),
});

// Clients that authenticate with a signed assertion: their public keys (JWK) from the
// environment, or the secret for client_secret_jwt.
const keyed = (id, jwk, alg) => ({
  ...client(id, undefined, 'private_key_jwt'),
  jwks: { keys: [JSON.parse(jwk)] },
  token_endpoint_auth_signing_alg: alg,
});

const provider = new Provider(issuer, {
  clients: [
    client('basic-client', process.env.BASIC_SECRET, 'client_secret_basic'),
    client('post-client', process.env.POST_SECRET, 'client_secret_post'),
    keyed('rsa-key-client', process.env.RSA_JWK, 'PS256'),
    keyed('ec-key-client', process.env.EC_JWK, 'ES256'),
    { ...client('hmac-client', process.env.HMAC_SECRET, 'client_secret_jwt'), token_endpoint_auth_signing_alg: 'HS256' },
    {
      ...client('mtls-client', undefined, 'tls_client_auth'),
      tls_client_auth_subject_dn: 'CN=mtls-client',
      tls_client_certificate_bound_access_tokens: true,
    },
    { ...client('self-signed-client', undefined, 'self_signed_tls_client_auth'), jwks: { keys: [JSON.parse(process.env.SELF_SIGNED_JWK)] } },
    // Must send DPoP proofs, and must put the server's nonce in them.
    { ...client('dpop-client', process.env.BASIC_SECRET, 'client_secret_basic'), dpop_bound_access_tokens: true },
  ],
  scopes: allScopes,
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt',
    'tls_client_auth', 'self_signed_tls_client_auth'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    // DPoP (RFC 9449), nonces required from any client that sends a proof.
    dPoP: { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true },
    // Client certificates arrive from the nginx TLS front in a header (PEM, URL-escaped).
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      tlsClientAuth: true,
      selfSignedTlsClientAuth: true,
      getCertificate: (ctx) => {
        const h = ctx.get('x-ssl-client-cert');
        return h ? decodeURIComponent(h) : undefined;
      },
      certificateAuthorized: (ctx) => {
        const pem = decodeURIComponent(ctx.get('x-ssl-client-cert'));
        return new X509Certificate(pem).verify(caCert.publicKey);
      },
      certificateSubjectMatches: (ctx, property, expected) => property === 'tls_client_auth_subject_dn'
        && new X509Certificate(decodeURIComponent(ctx.get('x-ssl-client-cert'))).subject === expected,
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => {
        const r = resources[resource];
        if (!r) throw new errors.InvalidTarget();
        return { scope: r.scope, audience: resource, accessTokenTTL: r.ttl, accessTokenFormat: 'jwt' };
      },
    },
  },
});

const stats = {};
provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path === '/__stats') {
    ctx.body = stats;
    return;
  }
  await next();
  if (ctx.method === 'POST' && ctx.path === '/token' && ctx.status === 200) {
    const key = `${ctx.oidc?.client?.clientId} ${ctx.oidc?.params?.resource}`;
    stats[key] = (stats[key] || 0) + 1;
  }
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`idp listening on ${issuer}`);
});
