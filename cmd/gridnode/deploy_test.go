package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shoalgrid/shoal/internal/proctest"
)

// yamlDocs decodes every document of the YAML files matching pattern.
func yamlDocs(t *testing.T, pattern string) []map[string]any {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no files match %s (%v)", pattern, err)
	}
	var docs []map[string]any
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var d map[string]any
			if err := dec.Decode(&d); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if d != nil {
				docs = append(docs, d)
			}
		}
	}
	return docs
}

// dig walks a decoded YAML document along keys (string: map key, int: list
// index) and returns what it finds, or nil.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func strs(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, e := range l {
		out = append(out, strings.TrimSpace(toString(e)))
	}
	return out
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	}
	return ""
}

// dockerfileEnv returns the ENV settings of the Dockerfile (the image's
// SHOAL_* defaults).
func dockerfileEnv(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	src := strings.ReplaceAll(string(b), "\\\n", " ")
	for _, line := range strings.Split(src, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "ENV ")
		if !ok {
			continue
		}
		for _, kv := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
	}
	return env
}

// TestKubernetesManifests checks deploy/kubernetes against gridnode itself:
// the container's arguments parse, the join name is the headless service's,
// the grace period outlasts the hand-over, probes hit real endpoints, and
// the disruption budget lets one member go at a time.
func TestKubernetesManifests(t *testing.T) {
	kinds := map[string]map[string]any{}
	var services []map[string]any
	for _, d := range yamlDocs(t, "../../deploy/kubernetes/*.yaml") {
		k := toString(d["kind"])
		if k == "Service" {
			services = append(services, d)
		}
		kinds[k] = d
	}
	sts, pdb := kinds["StatefulSet"], kinds["PodDisruptionBudget"]
	if sts == nil || pdb == nil || len(services) == 0 {
		t.Fatalf("want a StatefulSet, a PodDisruptionBudget and Services, got %v", kinds)
	}
	var headless map[string]any
	for _, s := range services {
		if toString(dig(s, "spec", "clusterIP")) == "None" {
			headless = s
		}
	}
	if headless == nil {
		t.Fatal("no headless service (clusterIP: None)")
	}
	if dig(headless, "spec", "publishNotReadyAddresses") != true {
		t.Error("the headless service must publish not-ready addresses: joining members resolve each other before they are Ready")
	}
	svcName := toString(dig(headless, "metadata", "name"))
	if toString(dig(sts, "spec", "serviceName")) != svcName {
		t.Errorf("StatefulSet serviceName %v, want the headless service %s", dig(sts, "spec", "serviceName"), svcName)
	}

	c := dig(sts, "spec", "template", "spec", "containers", 0)
	args := strs(dig(c, "args"))
	// Kubernetes expands $(VAR) from the container's env.
	expanded := make([]string, len(args))
	for i, a := range args {
		expanded[i] = regexp.MustCompile(`\$\((\w+)\)`).ReplaceAllStringFunc(a, func(s string) string {
			switch s {
			case "$(POD_IP)":
				return "10.1.2.3"
			default:
				return "shoal-0"
			}
		})
	}
	// The cluster key comes from a Secret mounted at --cluster-key-file:
	// stand in a throwaway key file at that path's name.
	keyFile := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sawKey := false
	for i, a := range expanded {
		if strings.HasPrefix(a, "--cluster-key-file=") {
			expanded[i], sawKey = "--cluster-key-file="+keyFile, true
		}
	}
	if !sawKey {
		t.Error("the StatefulSet gives no --cluster-key-file: members would refuse to listen on the pod's address")
	}
	o, err := parseOptions(expanded, env())
	if err != nil {
		t.Fatalf("container args %q do not parse: %v", args, err)
	}
	if len(o.join) != 1 {
		t.Fatalf("--join %v, want the headless service", o.join)
	}
	host, port, _ := net.SplitHostPort(o.join[0])
	if host != svcName || port != "7946" {
		t.Errorf("--join %s, want %s:7946", o.join[0], svcName)
	}
	grace, _ := dig(sts, "spec", "template", "spec", "terminationGracePeriodSeconds").(int)
	if time.Duration(grace)*time.Second < o.shutdownTimeout+10*time.Second {
		t.Errorf("terminationGracePeriodSeconds %d does not outlast --shutdown-timeout %v (plus 10s)", grace, o.shutdownTimeout)
	}
	_, httpPort, _ := net.SplitHostPort(o.http)
	ports := map[string]string{}
	for _, p := range dig(c, "ports").([]any) {
		ports[toString(dig(p, "name"))] = toString(dig(p, "containerPort"))
	}
	if ports["http"] != httpPort || ports["data"] != "5701" || ports["gossip-tcp"] != "7946" || ports["gossip-udp"] != "7946" {
		t.Errorf("container ports %v do not match --http %s, data 5701, gossip 7946", ports, o.http)
	}
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if got := toString(dig(c, probe, "httpGet", "path")); got != path || toString(dig(c, probe, "httpGet", "port")) != "http" {
			t.Errorf("%s: path %q port %v, want %s on http", probe, got, dig(c, probe, "httpGet", "port"), path)
		}
	}
	if dig(pdb, "spec", "maxUnavailable") != 1 {
		t.Errorf("PodDisruptionBudget maxUnavailable %v, want 1", dig(pdb, "spec", "maxUnavailable"))
	}
	label := toString(dig(sts, "spec", "template", "metadata", "labels", "app.kubernetes.io/name"))
	for what, sel := range map[string]any{
		"PDB": dig(pdb, "spec", "selector", "matchLabels", "app.kubernetes.io/name"), "headless service": dig(headless, "spec", "selector", "app.kubernetes.io/name"),
		"StatefulSet": dig(sts, "spec", "selector", "matchLabels", "app.kubernetes.io/name"),
	} {
		if toString(sel) != label || label == "" {
			t.Errorf("%s selects %v, pods are labelled %q", what, sel, label)
		}
	}
}

// TestComposeFile checks docker-compose.yml against gridnode and the image:
// every member's command parses over the image's environment, they join a
// name that is the network alias they all carry, and Docker waits out the
// hand-over before it kills a member.
func TestComposeFile(t *testing.T) {
	docs := yamlDocs(t, "../../docker-compose.yml")
	if len(docs) != 1 {
		t.Fatalf("%d documents", len(docs))
	}
	imageEnv := dockerfileEnv(t)
	if imageEnv["SHOAL_BIND"] == "" {
		t.Fatalf("Dockerfile ENV not found: %v", imageEnv)
	}
	services, _ := docs[0]["services"].(map[string]any)
	if len(services) != 3 {
		t.Fatalf("%d services, want 3", len(services))
	}
	names := map[string]bool{}
	for name, s := range services {
		cmd := strs(dig(s, "command"))
		o, err := parseOptions(cmd, func(k string) (string, bool) { v, ok := imageEnv[k]; return v, ok })
		if err != nil {
			t.Fatalf("%s: command %q does not parse: %v", name, cmd, err)
		}
		names[o.name] = true
		host, _, _ := net.SplitHostPort(o.join[0])
		var aliases []string
		for _, n := range dig(s, "networks").(map[string]any) {
			aliases = append(aliases, strs(dig(n, "aliases"))...)
		}
		if len(o.join) != 1 || !strings.Contains(strings.Join(aliases, " "), host) {
			t.Errorf("%s joins %v; its network aliases are %v", name, o.join, aliases)
		}
		grace, err := time.ParseDuration(toString(dig(s, "stop_grace_period")))
		if err != nil || grace < o.shutdownTimeout+10*time.Second {
			t.Errorf("%s: stop_grace_period %v does not outlast --shutdown-timeout %v (plus 10s)", name, dig(s, "stop_grace_period"), o.shutdownTimeout)
		}
		if o.http == "" {
			t.Errorf("%s: no --http", name)
		}
	}
	if len(names) != 3 {
		t.Errorf("member names %v are not distinct", names)
	}
}

// TestJoinByDNSName joins a seed by host name, as a headless service or a
// compose network alias is joined: the name is resolved (every address it
// has) on each attempt, so the seed may start after the joiner.
func TestJoinByDNSName(t *testing.T) {
	if ips, err := net.LookupIP("localhost"); err != nil || len(ips) == 0 {
		t.Skipf("localhost does not resolve here: %v", err)
	}
	seedGossip := proctest.FreeAddr(t)
	_, port, _ := net.SplitHostPort(seedGossip)
	bHTTP := proctest.FreeAddr(t)
	// The joiner starts first: the name resolves, but nothing answers yet.
	bSigs, bCodes, _ := runAsync(t, "--name", "b", "--bind", "127.0.0.1:0", "--addr", "127.0.0.1:0", "--http", bHTTP,
		"--gossip", "fast", "--join", "localhost:"+port, "--join-timeout", "60s")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitMetric(t, ctx, bHTTP, "shoal_starting", 1)
	aSigs, aCodes, _ := runAsync(t, "--name", "a", "--bind", seedGossip, "--addr", "127.0.0.1:0", "--gossip", "fast")
	waitMetric(t, ctx, bHTTP, "shoal_members", 2)
	waitMetric(t, ctx, bHTTP, "shoal_ready", 1)
	for _, n := range []struct {
		sigs  chan os.Signal
		codes <-chan int
	}{{bSigs, bCodes}, {aSigs, aCodes}} {
		n.sigs <- syscall.SIGTERM
		if code := waitCode(t, n.codes, 30*time.Second); code != 0 {
			t.Errorf("exit code %d", code)
		}
	}
}

// TestAlertRulesUseRealMetrics checks that every shoal_, go_ and process_
// metric the alerting rules use is one a member exports.
func TestAlertRulesUseRealMetrics(t *testing.T) {
	docs := yamlDocs(t, "../../deploy/prometheus/*.yaml")
	m := startMember(t)
	// The histogram family's HELP and TYPE are there before any operation.
	page := string(metricsPage(m, time.Now()))
	names := regexp.MustCompile(`\b(?:shoal|go|process)_[a-z_]+\b`)
	rules := 0
	for _, d := range docs {
		for _, g := range dig(d, "groups").([]any) {
			for _, r := range dig(g, "rules").([]any) {
				rules++
				expr := toString(dig(r, "expr"))
				for _, n := range names.FindAllString(expr, -1) {
					family := strings.TrimSuffix(n, "_bucket")
					if !strings.Contains(page, "# TYPE "+family+" ") {
						t.Errorf("alert %v uses %s, which /metrics does not export", dig(r, "alert"), n)
					}
				}
				if toString(dig(r, "annotations", "summary")) == "" {
					t.Errorf("alert %v has no summary", dig(r, "alert"))
				}
			}
		}
	}
	if rules < 5 {
		t.Errorf("only %d rules", rules)
	}
	ops, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		for _, g := range dig(d, "groups").([]any) {
			for _, r := range dig(g, "rules").([]any) {
				if a := toString(dig(r, "alert")); !strings.Contains(string(ops), "**"+a+"**") {
					t.Errorf("docs/operations.md does not explain alert %s", a)
				}
			}
		}
	}
}
