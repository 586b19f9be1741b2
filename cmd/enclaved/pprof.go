package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"
)

// servePprof serves the process's Go profiles on addr, a loopback address
// (`enclaved dev -pprof`, for internal/bench): GET /debug/pprof/heap and
// /debug/pprof/goroutine write those profiles; POST /debug/pprof/cpu/start
// and /debug/pprof/cpu/stop profile the CPU between two calls, so a
// benchmark's phase of unknown length is profiled whole (stop answers with
// the profile); between the two, blocking and mutex contention are sampled
// too (GET /debug/pprof/block and /debug/pprof/mutex: cumulative, compare
// two with pprof -base). It uses runtime/pprof, not net/http/pprof, which would also
// register itself on http.DefaultServeMux. It prints where it listens and
// returns a function that stops it.
// What the block and mutex profiles sample while a CPU profile runs: one
// blocking event per blockRate of time blocked, one contention in
// mutexFraction.
const (
	blockRate     = 10 * time.Microsecond
	mutexFraction = 10
)

func servePprof(addr string, stdout io.Writer) (func(), error) {
	if !isLoopbackAddr(addr) {
		return nil, fmt.Errorf("-pprof %s: profiles are served on a loopback address only", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-pprof: %w", err)
	}
	var mu sync.Mutex
	var cpu *bytes.Buffer // the running CPU profile, if any
	mux := http.NewServeMux()
	for _, name := range []string{"heap", "goroutine", "allocs", "block", "mutex"} {
		mux.HandleFunc("GET /debug/pprof/"+name, func(w http.ResponseWriter, r *http.Request) {
			if name == "heap" && r.URL.Query().Get("gc") == "1" {
				runtime.GC()
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			pprof.Lookup(name).WriteTo(w, 0)
		})
	}
	mux.HandleFunc("POST /debug/pprof/cpu/start", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if cpu != nil {
			http.Error(w, "a CPU profile is running", http.StatusConflict)
			return
		}
		buf := &bytes.Buffer{}
		if err := pprof.StartCPUProfile(buf); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		cpu = buf
		runtime.SetBlockProfileRate(int(blockRate))
		runtime.SetMutexProfileFraction(mutexFraction)
	})
	mux.HandleFunc("POST /debug/pprof/cpu/stop", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if cpu == nil {
			http.Error(w, "no CPU profile is running", http.StatusConflict)
			return
		}
		pprof.StopCPUProfile()
		runtime.SetBlockProfileRate(0)
		runtime.SetMutexProfileFraction(0)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(cpu.Bytes())
		cpu = nil
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	fmt.Fprintf(stdout, "  pprof:    http://%s/debug/pprof/\n", ln.Addr())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
