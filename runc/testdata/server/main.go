// Command server is the function the runtime tests start in a container:
// an HTTP server on $PORT that reports what the container looks like from
// inside. With -fail it prints its argument and exits at once instead; with
// -spam N it first writes N numbered lines to its standard output.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	fail := flag.String("fail", "", "print this to stderr and exit 3")
	ignoreTerm := flag.Bool("ignore-term", false, "ignore SIGTERM")
	spam := flag.Int("spam", 0, "write this many numbered lines to stdout first")
	flag.Parse()
	for i := range *spam {
		fmt.Printf("spam line %09d\n", i)
	}
	if *ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
	}
	if *fail != "" {
		fmt.Fprintln(os.Stderr, *fail)
		os.Exit(3)
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		host, _ := os.Hostname()
		cwd, _ := os.Getwd()
		json.NewEncoder(w).Encode(map[string]any{
			"pid":      os.Getpid(),
			"uid":      os.Getuid(),
			"hostname": host,
			"cwd":      cwd,
			"env":      os.Environ(),
			"root_err": errString(os.WriteFile("/probe", []byte("x"), 0o644)),
			"tmp_err":  errString(os.WriteFile("/tmp/probe", []byte("x"), 0o644)),
		})
	})
	addr := ":" + os.Getenv("PORT") // every address: a sandboxed container is reached on its own
	fmt.Println("listening on", addr)
	log.Fatal(http.ListenAndServe(addr, nil))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
