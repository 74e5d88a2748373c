package op

import (
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	if got := Quote("orders"); got != `"orders"` {
		t.Errorf("short: %s", got)
	}
	long := strings.Repeat("x", 1<<20)
	got := Quote(long)
	if len(got) > MaxQuoted+32 || !strings.HasSuffix(got, "…(1048576 bytes)") {
		t.Errorf("1 MiB name quoted as %d bytes: %.100s", len(got), got)
	}
	// A cut never splits a rune.
	multi := strings.Repeat("é", MaxQuoted)
	if got := Quote(multi); !strings.HasPrefix(got, `"`+strings.Repeat("é", MaxQuoted/2)+`"`) {
		t.Errorf("multibyte: %s", got)
	}
}
