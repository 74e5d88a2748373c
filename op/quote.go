package op

import (
	"strconv"
	"unicode/utf8"
)

// MaxQuoted is the most bytes of a caller-supplied string (a key, a name, a
// service) that Quote copies into an error message.
const MaxQuoted = 64

// Quote returns s quoted like %q for an error message, cut to MaxQuoted
// bytes (on a rune boundary) with its full length noted, so that an error
// about a 1 MiB name or a 32 KiB key does not echo it back in full to the
// peer, or into a log line.
func Quote(s string) string {
	if len(s) <= MaxQuoted {
		return strconv.Quote(s)
	}
	cut := MaxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…(" + strconv.Itoa(len(s)) + " bytes)"
}
