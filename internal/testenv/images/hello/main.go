// Command hello is a test image: it prints its environment, counts its starts
// in /data/starts (a volume), and serves a greeting over HTTP on :8080.
// GET /fetch?addr=HOST:PORT dials addr from inside the container, writes
// "ping", and answers "reply: " and what came back (or "error: ...").
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	env := os.Environ()
	sort.Strings(env)
	for _, kv := range env {
		fmt.Println("env", kv)
	}
	starts := 1
	if b, err := os.ReadFile("/data/starts"); err == nil {
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		starts = n + 1
	}
	if err := os.WriteFile("/data/starts", []byte(strconv.Itoa(starts)), 0o644); err != nil {
		fmt.Println("volume write failed:", err)
	}
	fmt.Println("starts", starts)
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from enclaved (start %d)\n", starts)
		for _, kv := range env {
			fmt.Fprintln(w, kv)
		}
	})
	http.HandleFunc("/fetch", func(w http.ResponseWriter, r *http.Request) {
		c, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), 10*time.Second)
		if err != nil {
			fmt.Fprintf(w, "error: %v", err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("ping"))
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(io.LimitReader(c, 1024))
		fmt.Fprintf(w, "reply: %s", b)
	})
	// Bind before saying so: tests wait for this line to connect.
	ln, err := net.Listen("tcp", ":8080")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("listening :8080")
	fmt.Println(http.Serve(ln, nil))
	os.Exit(1)
}
