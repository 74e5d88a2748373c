package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// updateDocs rewrites the generated part of docs/configuration.md:
// go test ./cmd/gridnode -run TestConfigurationDoc -update-docs
var updateDocs = flag.Bool("update-docs", false, "rewrite the flag table of docs/configuration.md")

const (
	configDoc      = "../../docs/configuration.md"
	flagTableBegin = "<!-- BEGIN FLAGS: generated from gridnode's flag set by `go test ./cmd/gridnode -run TestConfigurationDoc -update-docs`; do not edit -->"
	flagTableEnd   = "<!-- END FLAGS -->"
)

// flagTable renders every gridnode flag as a Markdown table: flag, its
// environment variable, default and description.
func flagTable() string {
	var b strings.Builder
	b.WriteString("| Flag | Environment variable | Default | Description |\n|---|---|---|---|\n")
	newFlagSet(&options{}).VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		flagCell := "`--" + f.Name
		if name != "" {
			flagCell += " " + name
		}
		flagCell += "`"
		envCell := "`" + envName(f.Name) + "`"
		if slices.Contains(commandLineOnly, f.Name) && f.Name != "config" {
			envCell = "(command line only)"
		}
		def := "`" + f.DefValue + "`"
		if f.DefValue == "" {
			def = "(empty)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", flagCell, envCell, def, strings.ReplaceAll(usage, "|", `\|`))
	})
	return b.String()
}

// TestConfigurationDoc checks that docs/configuration.md lists every flag
// of gridnode, as the flag set defines it (name, variable, default, text).
func TestConfigurationDoc(t *testing.T) {
	b, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, flagTableBegin), strings.Index(doc, flagTableEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers %q ... %q", configDoc, flagTableBegin, flagTableEnd)
	}
	want := flagTable()
	got := doc[i+len(flagTableBegin)+1 : j]
	if got == want {
		return
	}
	if *updateDocs {
		doc = doc[:i+len(flagTableBegin)+1] + want + doc[j:]
		if err := os.WriteFile(configDoc, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s is out of date with gridnode's flags; run: go test ./cmd/gridnode -run TestConfigurationDoc -update-docs\n--- want:\n%s", configDoc, want)
}

// TestConfigurationDocMentionsEveryFlag is the check a hand edit cannot
// defeat: every flag name appears in the table's rows.
func TestConfigurationDocMentionsEveryFlag(t *testing.T) {
	b, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	newFlagSet(&options{}).VisitAll(func(f *flag.Flag) {
		if !strings.Contains(string(b), "| `--"+f.Name) {
			t.Errorf("%s does not document --%s", configDoc, f.Name)
		}
	})
}
