// Package bench is enclaved's benchmark suite (issue 18): it drives a real
// instance on the real stack and prints one table of the figures the
// project has goals for, each next to its floor measured in the same run.
//
// The harness is a test, TestBench, rather than a command: the real stack it
// starts (testenv's regtest Lightning pair, local registry and FROM-scratch
// images, Docker, an in-process relay) is built on testing.TB, and so the
// smoke run that keeps the harness from rotting is the very same code as the
// full run, only smaller. By default (go test ./...) it runs tiny sizes and
// checks only that every row is produced and that replies arrived, never a
// timing; `make bench` sets ENCLAVED_BENCH=full and prints the table.
//
// What runs where:
//   - the instance is the `enclaved dev` binary, built from this tree and
//     run as its own process (so its RSS and CPU profile are its own), with
//     the harness's relay and regtest LND, its data dir on a RAM disk as in
//     the enclave, and -pprof for profiles;
//   - the renters are cmd/enclaved-load, built and run as a process: a
//     client written with go-nostr alone, like any renter's;
//   - the floors (DM crypto, LND AddInvoice, bare docker create+start) and
//     the figures that need the instance's parts (a metering pass, verify)
//     run in the harness itself;
//   - P8 runs last, on an instance of its own: renters deploy and pay
//     1-unit containers until 1,000 run (full) or something stops them
//     (p8_test.go), and every container and network is removed after,
//     even when the run is interrupted.
//
// Environment:
//
//	ENCLAVED_BENCH=full           full sizes (default: smoke sizes)
//	ENCLAVED_BENCH_OUT=FILE       also write the table and details to FILE
//	ENCLAVED_BENCH_P8=1           TestBenchP8 runs P8 alone (make bench-p8)
//	ENCLAVED_BENCH_PROFILE=DIR    write the instance's CPU, block and mutex
//	                              profiles of P1 and P2 and its heap
//	                              profiles to DIR
//	ENCLAVED_BENCH_ONLY=P1,P2     run only these figures (containers are
//	                              seeded on record all the same)
//
// Test-only tooling: nothing in production imports it.
package bench
