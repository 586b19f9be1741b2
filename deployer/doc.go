// Package deployer drives renters' containers through their lifecycle:
// launch from a pinned digest once paid, metering, pause at a zero balance
// and resume on a top-up, owners' stop, start and delete, removal after the
// retention window, exits, their volumes for backups and restores, and the
// reconcile at start that brings the runtime in line with the records
// (orphaned containers stopped, orphaned networks removed). The runtime is
// an interface (Runtime; deployer/docker implements it with the Docker
// engine), and every runtime object it makes carries LabelInstance, so
// instances sharing an engine never touch each other's.
//
// It runs inside the enclave (the trusted side): the records in SQLite are
// the truth, and the runtime is next to it in the enclave.
package deployer
