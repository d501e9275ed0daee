// Go's net/http with its defaults: HTTPS_PROXY from the environment, trust from SSL_CERT_FILE.
// Prints the body; exits 1 on failure.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
)

func main() {
	res, err := http.Get(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	fmt.Print(string(body))
	if res.StatusCode != 200 {
		os.Exit(1)
	}
}
