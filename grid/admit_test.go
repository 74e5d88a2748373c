package grid_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
)

// TestAdmissionRefusesMisfits starts a second member that must not join a
// one-member cluster (another cluster name, a name already in use, another
// partition count): Start fails with ErrRefused, naming the reason, and the
// cluster still has one member. A well-configured member then joins.
func TestAdmissionRefusesMisfits(t *testing.T) {
	c := gridtest.New(t, 1, gridtest.WithPartitions(31))
	seed := c.Member(0)
	for _, tc := range []struct {
		name string
		cfg  func(*grid.Config)
		want string
	}{
		{"cluster", func(cfg *grid.Config) { cfg.Cluster = "other" }, `is in cluster "shoal", this member in "other"`},
		{"duplicate-name", func(cfg *grid.Config) { cfg.Name = seed.Name() }, "already runs at"},
		{"partitions", func(cfg *grid.Config) { cfg.PartitionCount = 61 }, "has 31 partitions, this member 61"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := grid.Config{
				Name: "intruder", BindAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0",
				PartitionCount: 31, Gossip: grid.FastGossip(), Join: []string{seed.GossipAddr()},
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			}
			tc.cfg(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			m, err := grid.Start(ctx, cfg)
			if err == nil {
				m.Close()
				t.Fatal("Start succeeded; want ErrRefused")
			}
			if !errors.Is(err, grid.ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v; want ErrRefused mentioning %q", err, tc.want)
			}
			if ctx.Err() != nil {
				t.Fatalf("refusal took the whole join deadline: %v", err)
			}
			if n := len(seed.Members()); n != 1 {
				t.Fatalf("seed sees %d members after the refusal, want 1", n)
			}
		})
	}
	c.Add()
	c.WaitStable()
	if n := len(seed.Members()); n != 2 {
		t.Fatalf("seed sees %d members after a good join, want 2", n)
	}
}
