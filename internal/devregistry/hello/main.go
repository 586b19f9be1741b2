// Command hello is the demo image `make dev` serves: a small web page that
// says where it runs, counts its starts in its /data volume (kept while the
// container is stopped or paused) and logs each request, so a newcomer has
// something to deploy, open, zap and read the logs of.
//
// It is built static (CGO_ENABLED=0) and runs FROM scratch.
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

func main() {
	log.SetFlags(log.Ldate | log.Ltime | log.LUTC)
	starts := 1
	if b, err := os.ReadFile("/data/starts"); err == nil {
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		starts = n + 1
	}
	if err := os.WriteFile("/data/starts", []byte(strconv.Itoa(starts)), 0o644); err != nil {
		log.Printf("cannot count starts in /data: %v", err)
	}
	var requests atomic.Int64
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := requests.Add(1)
		log.Printf("%s %s (request %d)", r.Method, r.URL.Path, n)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "Hello from a container rented on enclaved.\nStart %d, request %d.\n", starts, n)
	})
	ln, err := net.Listen("tcp", ":8080")
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("start %d, listening on :8080", starts)
	log.Fatal(http.Serve(ln, nil))
}
