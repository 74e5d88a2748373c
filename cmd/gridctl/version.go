package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3" (make
// build does); otherwise the module version from the build info is used.
var version string

// buildVersion returns gridctl's version.
func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// versionCmd implements "gridctl --version" and "gridctl version".
func versionCmd(e env, g *globals, args []string) error {
	fs := newFlagSet("version")
	pos, err := parseCommand(e, "", fs, g, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("", "version takes no arguments, got %s", clip(pos[0]))
	}
	if g.json {
		return writeJSON(e.stdout, map[string]string{"version": buildVersion(), "go": runtime.Version()})
	}
	_, err = fmt.Fprintf(e.stdout, "gridctl %s %s\n", buildVersion(), runtime.Version())
	return err
}
