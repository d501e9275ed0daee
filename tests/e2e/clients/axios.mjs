// axios with an HTTPS proxy agent (axios's own proxy support does not tunnel https://).
// Trusts NODE_EXTRA_CA_CERTS. Prints the body; exits 1 on failure.
import axios from 'axios';
import { HttpsProxyAgent } from 'https-proxy-agent';

const agent = new HttpsProxyAgent(process.env.HTTPS_PROXY);
const res = await axios.get(process.argv[2], { httpsAgent: agent, proxy: false, responseType: 'text' });
process.stdout.write(res.data);
