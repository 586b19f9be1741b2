// Command hello is a test image: it prints its environment, counts its starts
// in /data/starts (a volume), and serves a greeting over HTTP on :8080.
package main

import (
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
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
	fmt.Println("listening :8080")
	if err := http.ListenAndServe(":8080", nil); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
}
