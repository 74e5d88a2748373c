//go:build unix

package main

import "syscall"

// readProcess reads the process's CPU time and file limits.
func readProcess() processInfo {
	p := processInfo{cpu: -1, rss: readProcRSS(), openFDs: readProcFDs(), maxFDs: -1}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		p.cpu = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		p.maxFDs = float64(rl.Cur)
	}
	return p
}
