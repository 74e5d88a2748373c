//go:build unix

package wire

import "syscall"

// writeFD is one write(2) on a socket descriptor.
func writeFD(fd uintptr, b []byte) (int, error) { return syscall.Write(int(fd), b) }
