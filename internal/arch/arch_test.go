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

func TestLayering(t *testing.T) {
	rules := []struct {
		pkg     string
		allowed []string // module-internal packages it may depend on
	}{
		{"op", nil},
		{"internal/mpsafe", nil},
		{"partition", []string{"internal/mpsafe"}},
		{"wire", []string{"op", "internal/mpsafe"}},
		{"maps", []string{"op", "internal/mpsafe"}},
		{"client", []string{"op", "wire", "partition", "internal/mpsafe"}},
	}
	for _, r := range rules {
		t.Run(r.pkg, func(t *testing.T) {
			for _, d := range deps(t, r.pkg) {
				if !slices.Contains(r.allowed, d) {
					t.Errorf("%s depends on %s; allowed: %v", r.pkg, d, r.allowed)
				}
			}
		})
	}
}
