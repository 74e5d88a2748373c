//go:build !unix

package wire

import "syscall"

// writeFD reports EAGAIN where raw socket writes are not wired up: batch
// flushes then leave every write to the connection's write loop.
func writeFD(uintptr, []byte) (int, error) { return 0, syscall.EAGAIN }
