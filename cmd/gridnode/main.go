// Command gridnode runs one Shoal member: it joins (or starts) a cluster,
// serves clients and other members on its data address, and optionally
// exposes health, readiness, status and Prometheus metrics over HTTP.
//
// Settings come from flags, SHOAL_* environment variables and a YAML file,
// in that order of precedence (see gridnode -h). SIGTERM or SIGINT leaves
// the cluster gracefully, handing partitions over first; a repeat within a
// second is the same request (timeout(1) signals the process and its
// group), and a signal after that exits at once.
//
// Exit codes: 0 after a clean stop, 1 on a runtime failure (cannot listen,
// cannot join, hand-over incomplete at shutdown), 2 on a usage error (bad
// flag, environment variable or config file).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the module version from the build info is used.
var version string

func main() {
	os.Exit(gridnode(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

// gridnode parses the settings and runs the member until a signal stops it.
// It returns the process exit code.
func gridnode(args []string, getenv func(string) (string, bool), stdout, stderr io.Writer) int {
	o, err := parseOptions(args, getenv)
	switch {
	case errors.Is(err, flag.ErrHelp):
		printUsage(stdout)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "gridnode: %v (see gridnode -h)\n", err)
		return 2
	case o.version:
		fmt.Fprintf(stdout, "gridnode %s %s\n", buildVersion(), runtime.Version())
		return 0
	}
	// Buffer two signals: the first starts a graceful stop, the second
	// must still be delivered while the first is being handled.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	return run(o, o.newLogger(stderr), stderr, sigs, os.Exit)
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
