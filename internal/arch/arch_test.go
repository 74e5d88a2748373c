package arch

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/shoalgrid/shoal/"

// deps returns the module-internal packages pkg depends on (transitively,
// tests excluded).
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", mod+pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	var ds []string
	for _, l := range strings.Fields(string(out)) {
		if strings.HasPrefix(l, mod) && l != mod+pkg {
			ds = append(ds, strings.TrimPrefix(l, mod))
		}
	}
	return ds
}

// structures are the structure packages: pure state machines and proxies.
// Only op (and the standard library, x/sync) sits below them, and nothing
// of the core sits above them but the programs that assemble a member.
var structures = []string{"maps", "locks", "queues", "replicated"}

// exists reports whether the module has package pkg (structure packages
// arrive one by one).
func exists(pkg string) bool {
	return exec.Command("go", "list", mod+pkg).Run() == nil
}

func TestLayering(t *testing.T) {
	rules := []struct {
		pkg     string
		allowed []string // module-internal packages it may depend on
	}{
		{"op", nil},
		{"sysop", nil},
		{"internal/mpsafe", nil},
		// internal/iheap is a leaf the state machines may share.
		{"internal/iheap", nil},
		// internal/varbin is the bounded varint reader their codecs share.
		{"internal/varbin", nil},
		{"partition", []string{"internal/mpsafe"}},
		{"wire", []string{"op", "internal/mpsafe"}},
		// internal/invoke is the route-and-retry loop grid and client
		// share; it must stay below both.
		{"internal/invoke", []string{"op", "partition", "internal/mpsafe"}},
		// internal/evsub is the subscriber side of events, shared the
		// same way.
		{"internal/evsub", []string{"op", "wire", "partition", "sysop", "internal/mpsafe"}},
		{"client", []string{"op", "wire", "partition", "sysop", "internal/invoke", "internal/evsub", "internal/mpsafe"}},
		{"grid", []string{"op", "wire", "partition", "sysop", "backup", "quorum", "internal/invoke", "internal/evsub", "internal/mpsafe"}},
		{"backup", []string{"op", "wire", "partition", "internal/mpsafe"}},
		// backup/backuptest is the in-memory transport for tests: no more
		// than backup itself.
		{"backup/backuptest", []string{"backup", "op", "wire", "partition", "internal/mpsafe"}},
		{"quorum", []string{"op", "partition"}},
	}
	for _, s := range structures {
		rules = append(rules, struct {
			pkg     string
			allowed []string
		}{s, []string{"op", "internal/mpsafe", "internal/iheap", "internal/varbin"}})
	}
	for _, r := range rules {
		t.Run(r.pkg, func(t *testing.T) {
			if !exists(r.pkg) {
				t.Skipf("no package %s yet", r.pkg)
			}
			for _, d := range deps(t, r.pkg) {
				if !slices.Contains(r.allowed, d) {
					t.Errorf("%s depends on %s; allowed: %v", r.pkg, d, r.allowed)
				}
			}
		})
	}
}

// TestCoreImportsNoStructure checks the assembly rule on its own: the core
// packages never import a structure package, whatever else they may use.
func TestCoreImportsNoStructure(t *testing.T) {
	for _, pkg := range []string{"grid", "client", "wire", "partition", "op", "sysop", "backup", "quorum", "internal/invoke", "internal/evsub"} {
		if !exists(pkg) {
			continue
		}
		for _, d := range deps(t, pkg) {
			if slices.Contains(structures, d) || strings.HasPrefix(d, "maps/") {
				t.Errorf("%s imports structure package %s: services are registered through grid.Config.Services", pkg, d)
			}
		}
	}
}
