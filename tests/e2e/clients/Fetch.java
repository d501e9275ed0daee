// Java's HttpClient through a proxy (PROXY_PORT), trusting the javax.net.ssl.trustStore given
// on the command line. Prints the body; exits 1 on failure.
import java.net.InetSocketAddress;
import java.net.ProxySelector;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class Fetch {
    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(System.getenv("PROXY_PORT"));
        HttpClient client = HttpClient.newBuilder()
            .proxy(ProxySelector.of(new InetSocketAddress("127.0.0.1", port)))
            .version(HttpClient.Version.HTTP_1_1)
            .build();
        HttpRequest req = HttpRequest.newBuilder(URI.create(args[0])).build();
        HttpResponse<String> res = client.send(req, HttpResponse.BodyHandlers.ofString());
        System.out.print(res.body());
        System.exit(res.statusCode() == 200 ? 0 : 1);
    }
}
