// Node's undici with EnvHttpProxyAgent (what Node's built-in fetch uses for proxies): reads
// HTTP_PROXY/HTTPS_PROXY, trusts NODE_EXTRA_CA_CERTS. Prints the body; exits 1 on failure.
import { EnvHttpProxyAgent, fetch } from 'undici';

const res = await fetch(process.argv[2], { dispatcher: new EnvHttpProxyAgent() });
process.stdout.write(await res.text());
process.exit(res.status === 200 ? 0 : 1);
