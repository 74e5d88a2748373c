package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// defaultMaxMemory is --max-memory's default: a share of the memory this
// process may use (its cgroup's limit, else the machine's memory), leaving
// room for what is not Go heap (stacks, buffers, the runtime's slack).
const defaultMaxMemory = "70%"

// checkMaxMemory validates a --max-memory value: 0 (off), a size such as
// 512MiB or 2GiB (B, KiB, MiB, GiB, TiB suffixes; a bare number is bytes)
// or a percentage of the available memory from 1% to 100%.
func checkMaxMemory(s string) error {
	_, _, err := parseMaxMemory(s)
	return err
}

// parseMaxMemory returns the bytes of a size, or the percentage of a
// "N%" value (pct true).
func parseMaxMemory(s string) (n uint64, pct bool, err error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseUint(strings.TrimSpace(p), 10, 8)
		if err != nil || v < 1 || v > 100 {
			return 0, false, errors.New("want a percentage from 1% to 100%, a size such as 512MiB or 2GiB, or 0 (off)")
		}
		return v, true, nil
	}
	mult := uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > (1<<62)/mult {
		return 0, false, errors.New("want a size such as 512MiB or 2GiB, a percentage such as 70%, or 0 (off)")
	}
	return v * mult, false, nil
}

// resolveMaxMemory turns a checked --max-memory value into bytes (0: off).
// A percentage applies to available(), which returns the memory the
// process may use and where that figure comes from; when it cannot tell,
// the guard is off (0) and why is returned.
func resolveMaxMemory(s string, available func() (uint64, string, error)) (bytes uint64, from string, err error) {
	n, pct, err := parseMaxMemory(s)
	if err != nil || !pct {
		return n, "", err
	}
	total, from, err := available()
	if err != nil {
		return 0, "", err
	}
	return total / 100 * n, fmt.Sprintf("%d%% of %d bytes (%s)", n, total, from), nil
}

// availableMemory returns the memory limit of this process's cgroup (v2
// memory.max, else v1 memory.limit_in_bytes) when one is set, else the
// machine's memory (MemTotal of /proc/meminfo).
func availableMemory() (uint64, string, error) {
	for _, p := range cgroupLimitFiles() {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			break // v2: no limit
		}
		if n, err := strconv.ParseUint(v, 10, 64); err == nil && n > 0 && n < 1<<62 {
			return n, "cgroup limit " + p, nil
		}
	}
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, "", fmt.Errorf("no cgroup memory limit and no /proc/meminfo: %w", err)
	}
	return memTotal(b)
}

// cgroupLimitFiles lists where this process's cgroup memory limit can be
// read, most specific first.
func cgroupLimitFiles() []string {
	var files []string
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok && p != "/" && !strings.Contains(p, "..") {
				files = append(files, filepath.Join("/sys/fs/cgroup", filepath.Clean(p), "memory.max"))
			}
		}
	}
	return append(files, "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
}

// memTotal reads MemTotal from the text of /proc/meminfo.
func memTotal(meminfo []byte) (uint64, string, error) {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil || kb == 0 {
				break
			}
			return kb << 10, "MemTotal of /proc/meminfo", nil
		}
	}
	return 0, "", errors.New("/proc/meminfo has no MemTotal")
}
