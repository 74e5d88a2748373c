package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/shoalgrid/shoal/partition"
)

// memberCmd implements "gridctl member remove NAME [--force]".
func memberCmd(ctx context.Context, e env, g *globals, args []string) error {
	fs := newFlagSet("member")
	force := fs.Bool("force", false, "remove it even though the coordinator has no quorum (only for members gone for good)")
	pos, err := parseCommand(e, "member", fs, g, args)
	if err != nil {
		return err
	}
	_, pos, err = subcommand("member", pos, []subSpec{{"remove", 1, 1, "NAME"}})
	if err != nil {
		return err
	}
	name := pos[0]
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	octx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	v, err := c.RemoveMember(octx, name, *force)
	if err != nil {
		return err
	}
	if g.json {
		return json.NewEncoder(e.stdout).Encode(struct {
			Removed      string `json:"removed"`
			TableVersion uint64 `json:"table_version"`
		}{name, v})
	}
	fmt.Fprintf(e.stdout, "member %s removed from the expected size (table version %s)\n", clip(name), partition.VersionString(v))
	return nil
}
