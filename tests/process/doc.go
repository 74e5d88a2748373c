// Package process holds tests that run real gridnode processes (kill -9,
// SIGSTOP, SIGTERM, exit codes). They are behind the build tag "process":
//
//	go test -race -count=1 -tags process ./tests/process/...
//
// The failure tests (failover_test.go) run writers through one client
// while members are killed, paused or restarted, record every call in an
// internal/faults History and check that no acknowledged write was lost,
// no value invented and no increment applied twice (load_test.go has the
// load generator and the "settled" cluster check they share).
package process
