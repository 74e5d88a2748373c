// Package process holds tests that run real gridnode processes (kill -9,
// SIGTERM, exit codes). They are behind the build tag "process":
//
//	go test -race -count=1 -tags process ./tests/process/...
package process
