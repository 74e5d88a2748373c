package main

import (
	"fmt"
	"github.com/shoalgrid/shoal/locks"
	"slices"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/queues"
	"github.com/shoalgrid/shoal/replicated"
)

// services returns the structure services a gridnode runs. The member core
// (grid) has none built in: this is where a program assembles its member.
func services(o options) []op.Service {
	return []op.Service{maps.Service{Rules: o.mapRules, PartitionCount: o.partitions}, maps.IdemService{}, locks.Service{}, queues.Service{Rules: o.queueRules}, replicated.Service{}}
}

// queuesKey is the config-file key of the queue rules.
const queuesKey = "queues"

// mapsKey is the config-file key of the map rules.
const mapsKey = "maps"

// eachRule walks a config-file list of rules (key names the list): each
// item must be a mapping with a pattern and only the known keys; decode
// turns one item into a rule. Unknown keys are errors, like everywhere in
// the config file.
func eachRule(n *yaml.Node, path, key string, known []string, decode func(it *yaml.Node, at string) error) error {
	at := func(n *yaml.Node) string { return fmt.Sprintf("config file %s:%d: %s", path, n.Line, key) }
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return usagef("%s: want a list of rules", at(n))
	}
	for _, it := range n.Content {
		if it.Kind != yaml.MappingNode {
			return usagef("%s: each rule is a mapping", at(it))
		}
		pattern := false
		for i := 0; i < len(it.Content); i += 2 {
			k := it.Content[i].Value
			if !slices.Contains(known, k) {
				return usagef("%s: unknown key %q (known: %v)", at(it.Content[i]), k, known)
			}
			pattern = pattern || (k == "pattern" && it.Content[i+1].Value != "")
		}
		if !pattern {
			return usagef("%s: a rule needs a pattern", at(it))
		}
		if err := decode(it, at(it)); err != nil {
			return err
		}
	}
	return nil
}

// duration parses an optional duration field of a rule ("" = zero).
func duration(s, field, at string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, usagef("%s: %s: %v", at, field, err)
	}
	return d, nil
}

// parseQueueRules parses the "queues" list: pattern and any of capacity,
// visibility, max-deliveries and item-events.
func parseQueueRules(n *yaml.Node, path string) ([]queues.Rule, error) {
	var rules []queues.Rule
	err := eachRule(n, path, queuesKey, []string{"pattern", "capacity", "visibility", "max-deliveries", "item-events"}, func(it *yaml.Node, at string) error {
		var raw struct {
			Pattern       string `yaml:"pattern"`
			Capacity      int    `yaml:"capacity"`
			Visibility    string `yaml:"visibility"`
			MaxDeliveries int    `yaml:"max-deliveries"`
			ItemEvents    bool   `yaml:"item-events"`
		}
		if err := it.Decode(&raw); err != nil {
			return usagef("%s: %v", at, err)
		}
		vis, err := duration(raw.Visibility, "visibility", at)
		if err != nil {
			return err
		}
		rules = append(rules, queues.Rule{Pattern: raw.Pattern, Capacity: raw.Capacity, Visibility: vis, MaxDeliveries: raw.MaxDeliveries, ItemEvents: raw.ItemEvents})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := (queues.Service{Rules: rules}).Validate(); err != nil {
		return nil, usagef("config file %s: %v", path, err)
	}
	return rules, nil
}

// parseMapRules parses the "maps" list: pattern and any of default-ttl,
// max-entries, max-idle and eviction.
func parseMapRules(n *yaml.Node, path string) ([]maps.Rule, error) {
	var rules []maps.Rule
	err := eachRule(n, path, mapsKey, []string{"pattern", "default-ttl", "max-entries", "max-idle", "eviction"}, func(it *yaml.Node, at string) error {
		var raw struct {
			Pattern    string `yaml:"pattern"`
			DefaultTTL string `yaml:"default-ttl"`
			MaxEntries int    `yaml:"max-entries"`
			MaxIdle    string `yaml:"max-idle"`
			Eviction   string `yaml:"eviction"`
		}
		if err := it.Decode(&raw); err != nil {
			return usagef("%s: %v", at, err)
		}
		ttl, err := duration(raw.DefaultTTL, "default-ttl", at)
		if err != nil {
			return err
		}
		idle, err := duration(raw.MaxIdle, "max-idle", at)
		if err != nil {
			return err
		}
		rules = append(rules, maps.Rule{Pattern: raw.Pattern, DefaultTTL: ttl, MaxEntries: raw.MaxEntries, MaxIdle: idle, Eviction: raw.Eviction})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := maps.ValidateRules(rules); err != nil {
		return nil, usagef("config file %s: %v", path, err)
	}
	return rules, nil
}
