// Package deps holds the test that keeps the import graph on the trust
// boundary (deps_test.go): what runs on the parent never imports the
// enclave's side nor the other way round, protocol code does no I/O, and
// only the dev command reaches test and dev tooling. It has no code.
package deps
