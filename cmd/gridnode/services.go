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
)

// services returns the structure services a gridnode runs. The member core
// (grid) has none built in: this is where a program assembles its member.
func services(o options) []op.Service {
	return []op.Service{maps.Service{Rules: o.mapRules, PartitionCount: o.partitions}, maps.IdemService{}, locks.Service{}, queues.Service{Rules: o.queueRules}}
}

// queuesKey is the config-file key of the queue rules.
const queuesKey = "queues"

// parseQueueRules parses the "queues" list: mappings with a pattern and
// any of capacity, visibility, max-deliveries and item-events. Unknown keys
// are errors, like everywhere in the config file.
func parseQueueRules(n *yaml.Node, path string) ([]queues.Rule, error) {
	at := func(n *yaml.Node) string { return fmt.Sprintf("config file %s:%d: %s", path, n.Line, queuesKey) }
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, usagef("%s: want a list of rules", at(n))
	}
	known := []string{"pattern", "capacity", "visibility", "max-deliveries", "item-events"}
	var rules []queues.Rule
	for _, it := range n.Content {
		if it.Kind != yaml.MappingNode {
			return nil, usagef("%s: each rule is a mapping", at(it))
		}
		for i := 0; i < len(it.Content); i += 2 {
			if k := it.Content[i].Value; !slices.Contains(known, k) {
				return nil, usagef("%s: unknown key %q (known: %v)", at(it.Content[i]), k, known)
			}
		}
		var raw struct {
			Pattern       string `yaml:"pattern"`
			Capacity      int    `yaml:"capacity"`
			Visibility    string `yaml:"visibility"`
			MaxDeliveries int    `yaml:"max-deliveries"`
			ItemEvents    bool   `yaml:"item-events"`
		}
		if err := it.Decode(&raw); err != nil {
			return nil, usagef("%s: %v", at(it), err)
		}
		if raw.Pattern == "" {
			return nil, usagef("%s: a rule needs a pattern", at(it))
		}
		r := queues.Rule{Pattern: raw.Pattern, Capacity: raw.Capacity, MaxDeliveries: raw.MaxDeliveries, ItemEvents: raw.ItemEvents}
		if raw.Visibility != "" {
			d, err := time.ParseDuration(raw.Visibility)
			if err != nil {
				return nil, usagef("%s: visibility: %v", at(it), err)
			}
			r.Visibility = d
		}
		rules = append(rules, r)
	}
	if err := (queues.Service{Rules: rules}).Validate(); err != nil {
		return nil, usagef("config file %s: %v", path, err)
	}
	return rules, nil
}

// mapsKey is the config-file key of the map rules.
const mapsKey = "maps"

// parseMapRules parses the "maps" list: mappings with a pattern and any of
// default-ttl and max-entries. Unknown keys are errors.
func parseMapRules(n *yaml.Node, path string) ([]maps.Rule, error) {
	at := func(n *yaml.Node) string { return fmt.Sprintf("config file %s:%d: %s", path, n.Line, mapsKey) }
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, usagef("%s: want a list of rules", at(n))
	}
	known := []string{"pattern", "default-ttl", "max-entries"}
	var rules []maps.Rule
	for _, it := range n.Content {
		if it.Kind != yaml.MappingNode {
			return nil, usagef("%s: each rule is a mapping", at(it))
		}
		for i := 0; i < len(it.Content); i += 2 {
			if k := it.Content[i].Value; !slices.Contains(known, k) {
				return nil, usagef("%s: unknown key %q (known: %v)", at(it.Content[i]), k, known)
			}
		}
		var raw struct {
			Pattern    string `yaml:"pattern"`
			DefaultTTL string `yaml:"default-ttl"`
			MaxEntries int    `yaml:"max-entries"`
		}
		if err := it.Decode(&raw); err != nil {
			return nil, usagef("%s: %v", at(it), err)
		}
		if raw.Pattern == "" {
			return nil, usagef("%s: a rule needs a pattern", at(it))
		}
		r := maps.Rule{Pattern: raw.Pattern, MaxEntries: raw.MaxEntries}
		if raw.DefaultTTL != "" {
			d, err := time.ParseDuration(raw.DefaultTTL)
			if err != nil {
				return nil, usagef("%s: default-ttl: %v", at(it), err)
			}
			r.DefaultTTL = d
		}
		rules = append(rules, r)
	}
	if err := maps.ValidateRules(rules); err != nil {
		return nil, usagef("config file %s: %v", path, err)
	}
	return rules, nil
}
