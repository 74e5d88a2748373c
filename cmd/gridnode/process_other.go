//go:build !unix

package main

// readProcess reads what it can of the process's resources.
func readProcess() processInfo {
	return processInfo{cpu: -1, rss: readProcRSS(), openFDs: readProcFDs(), maxFDs: -1}
}
