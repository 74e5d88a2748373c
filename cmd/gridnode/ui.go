package main

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"time"

	"github.com/shoalgrid/shoal/grid"
)

// The status page: one self-contained HTML document (no script, no external
// resource), rendered on the member from the same data as /status, and
// refreshed by the browser every few seconds.

// uiColor colours member i (its index in the table) on the partition map.
func uiColor(i int) string {
	palette := [...]string{"#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac", "#86bcb6"}
	return palette[i%len(palette)]
}

type uiMember struct {
	Name, Addr, Gossip, Zone, Host string
	Leaving, Self, InTable         bool
	Owned, Backups                 int
	Color                          string
}

type uiCell struct {
	ID       int32
	Owner    string
	Color    string
	Replicas int
}

type uiOp struct {
	Service, Op string
	Count       uint64
	Mean, P99   string
}

type uiPage struct {
	Cluster, Version, Now string
	Starting              bool
	Stats                 grid.Stats
	Members               []uiMember
	TableVersion          uint64
	Partitions, Unowned   int
	Cells                 []uiCell
	Structures            []grid.StructureInfo
	Ops                   []uiOp
	Events                []eventRec
}

// uiData gathers the page's data from m (nil while starting).
func uiData(m *grid.Member, cluster string, events *eventLog) uiPage {
	p := uiPage{Cluster: cluster, Version: buildVersion(), Now: time.Now().UTC().Format(time.RFC3339), Starting: m == nil, Events: events.recent()}
	if m == nil {
		return p
	}
	p.Stats = m.Stats()
	t := m.Table()
	colors := map[string]string{}
	owned, backups := map[string]int{}, map[string]int{}
	if t != nil {
		p.TableVersion, p.Partitions = t.Version, t.Count
		for i, mb := range t.Members {
			colors[mb.Name] = uiColor(i)
			owned[mb.Name] = len(t.Owned(mb.Name))
			backups[mb.Name] = len(t.BackedUp(mb.Name))
		}
		for id := range int32(t.Count) {
			c := uiCell{ID: id, Color: "#d62728", Owner: "none", Replicas: t.ReplicaCount(id)}
			if o, ok := t.Owner(id); ok {
				c.Owner, c.Color = o.Name, colors[o.Name]
			} else {
				p.Unowned++
			}
			p.Cells = append(p.Cells, c)
		}
	}
	for _, mi := range m.Members() {
		_, in := colors[mi.Name]
		p.Members = append(p.Members, uiMember{
			Name: mi.Name, Addr: mi.Addr, Gossip: mi.GossipAddr, Zone: mi.Zone, Host: mi.Host,
			Leaving: mi.Leaving, Self: mi.Name == m.Name(), InTable: in,
			Owned: owned[mi.Name], Backups: backups[mi.Name], Color: cmpOr(colors[mi.Name], "#cccccc"),
		})
	}
	p.Structures = m.Structures()
	bounds := grid.LatencyBounds()
	for _, l := range m.OpLatencies() {
		if l.Count == 0 {
			continue
		}
		p.Ops = append(p.Ops, uiOp{
			Service: l.Service, Op: l.Op, Count: l.Count,
			Mean: fmtDur(l.Sum / time.Duration(l.Count)),
			P99:  quantileBound(l, bounds, 0.99),
		})
	}
	slices.SortFunc(p.Ops, func(a, b uiOp) int { return int(b.Count) - int(a.Count) })
	return p
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// quantileBound returns the upper bound of the bucket holding quantile q.
func quantileBound(l grid.OpLatency, bounds []time.Duration, q float64) string {
	var total uint64
	for _, n := range l.Buckets {
		total += n
	}
	need := uint64(q * float64(total))
	var cum uint64
	for i, n := range l.Buckets {
		cum += n
		if cum >= need && cum > 0 {
			if i < len(bounds) {
				return "≤ " + fmtDur(bounds[i])
			}
			return "> " + fmtDur(bounds[len(bounds)-1])
		}
	}
	return "-"
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// serveUI renders the status page.
func serveUI(w http.ResponseWriter, data uiPage) {
	var b bytes.Buffer
	if err := uiTemplate().Execute(&b, data); err != nil {
		writeText(w, http.StatusInternalServerError, fmt.Sprintf("render status page: %v\n", err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b.Bytes())
}

// uiTemplate parses the page template (cheap next to a human's refresh).
func uiTemplate() *template.Template {
	return template.Must(template.New("ui").Parse(uiHTML))
}

const uiHTML = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<title>Shoal {{.Cluster}}{{with .Stats.Name}} · {{.}}{{end}}</title>
<style>
body{font:14px/1.4 "DejaVu Sans",system-ui,sans-serif;margin:20px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:22px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
.sub{color:#666} table{border-collapse:collapse;background:#fff} th,td{padding:4px 10px;border:1px solid #e3e3e3;text-align:left}
th{background:#f0f0f0} td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px;color:#fff}
.ok{background:#2ca02c}.warn{background:#e6a100}.bad{background:#d62728}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:middle;margin-right:5px}
#map{display:grid;grid-template-columns:repeat(40,16px);gap:2px;margin:6px 0}
#map div{width:16px;height:16px;border-radius:2px}
#map div.thin{outline:2px solid #d62728;outline-offset:-2px}
</style></head><body>
<h1>Shoal cluster <span id="cluster">{{.Cluster}}</span></h1>
<div class="sub">{{if .Starting}}member starting: joining the cluster{{else}}member <b id="self">{{.Stats.Name}}</b> ({{.Stats.Addr}}){{end}} · gridnode {{.Version}} · {{.Now}}</div>
{{if .Starting}}<p><span class="badge warn">joining</span> this member has not joined its cluster yet.</p>{{else}}
<p id="health">
{{if .Stats.Ready}}<span class="badge ok">ready</span>{{else}}<span class="badge warn">not ready</span>{{end}}
{{if .Stats.Coordinator}}<span class="badge ok">coordinator</span>{{end}}
{{if .Stats.Leaving}}<span class="badge warn">leaving</span>{{end}}
{{if .Stats.Fenced}}<span class="badge bad">fenced</span>{{end}}
{{if .Stats.UnsyncedBackups}}<span class="badge warn">{{.Stats.UnsyncedBackups}} backups catching up</span>{{else}}<span class="badge ok">backups in sync</span>{{end}}
{{if .Unowned}}<span class="badge bad">{{.Unowned}} partitions without owner</span>{{end}}
· table version {{.TableVersion}} · {{.Stats.Members}} members · {{.Partitions}} partitions · {{.Stats.TableBackups}} backup(s) each
</p>
<h2>Members</h2>
<table id="members"><tr><th>Name</th><th>Data address</th><th>Gossip</th><th>Zone</th><th>Host</th><th>Owned</th><th>Backups</th><th>State</th></tr>
{{range .Members}}<tr class="member"><td><span class="sw" style="background:{{.Color}}"></span>{{.Name}}{{if .Self}} (this){{end}}</td><td>{{.Addr}}</td><td>{{.Gossip}}</td><td>{{or .Zone "-"}}</td><td>{{or .Host "-"}}</td><td class="n">{{.Owned}}</td><td class="n">{{.Backups}}</td>
<td>{{if .Leaving}}leaving{{else if .InTable}}serving{{else}}joining{{end}}</td></tr>
{{end}}</table>
<h2>Partitions</h2>
<div class="sub">Each square is a partition, coloured by its owner; outlined in red: fewer replicas than the others.</div>
<div id="map">{{$max := .Stats.TableBackups}}{{range .Cells}}<div title="partition {{.ID}}: {{.Owner}}, {{.Replicas}} replica(s)" style="background:{{.Color}}"{{if le .Replicas $max}} class="thin"{{end}}></div>{{end}}</div>
<h2>Structures</h2>
{{if .Structures}}<table id="structures"><tr><th>Kind</th><th>Name</th><th>Entries here</th><th>Partitions here</th></tr>
{{range .Structures}}<tr><td>{{.Service}}</td><td>{{.Name}}</td><td class="n">{{.Entries}}</td><td class="n">{{.Partitions}}</td></tr>
{{end}}</table>{{else}}<p class="sub">No structure holds entries in the partitions this member owns.</p>{{end}}
<h2>Operations executed here</h2>
{{if .Ops}}<table id="ops"><tr><th>Kind</th><th>Operation</th><th>Count</th><th>Mean</th><th>p99</th></tr>
{{range .Ops}}<tr><td>{{.Service}}</td><td>{{.Op}}</td><td class="n">{{.Count}}</td><td class="n">{{.Mean}}</td><td class="n">{{.P99}}</td></tr>
{{end}}</table>{{else}}<p class="sub">None yet.</p>{{end}}
{{end}}
<h2>Recent events</h2>
{{if .Events}}<table id="events"><tr><th>Time (UTC)</th><th>Event</th><th></th></tr>
{{range .Events}}<tr><td>{{.Time.UTC.Format "15:04:05.000"}}</td><td>{{.Kind}}</td><td>{{.Text}}</td></tr>
{{end}}</table>{{else}}<p class="sub">None yet.</p>{{end}}
</body></html>
`
