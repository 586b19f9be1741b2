// Command exitafter is a test image: it prints a line, waits EXIT_AFTER
// seconds (default 1) and exits with EXIT_CODE (default 0). SIGTERM ends it
// at once with code 143. With ALLOC_MB it first allocates and touches that
// many MiB, so a smaller memory limit gets it OOM-killed.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	after, code := 1, 0
	if v, err := strconv.Atoi(os.Getenv("EXIT_AFTER")); err == nil {
		after = v
	}
	if v, err := strconv.Atoi(os.Getenv("EXIT_CODE")); err == nil {
		code = v
	}
	var hold [][]byte
	if mb, err := strconv.Atoi(os.Getenv("ALLOC_MB")); err == nil {
		for i := 0; i < mb; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			hold = append(hold, b)
		}
		fmt.Printf("allocated %d MiB\n", len(hold))
	}
	fmt.Printf("exiting after %ds with code %d\n", after, code)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	select {
	case <-time.After(time.Duration(after) * time.Second):
		fmt.Println("bye")
		os.Exit(code)
	case <-term:
		fmt.Println("terminated")
		os.Exit(143)
	}
}
