//go:build ui

package main

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chromium finds the headless browser (Debian package chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium: apt-get install chromium (the ui tests need it)")
	return ""
}

// headless runs chromium headless on url with extra flags and returns its
// standard output.
func headless(t *testing.T, browser, url string, flags ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(), "--window-size=1280,1000"}, flags...)
	cmd := exec.CommandContext(ctx, browser, append(args, url)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s", browser, flags, err, errOut.String())
	}
	return out.Bytes()
}

// TestStatusPageInChromium renders the status page of a 3-member cluster
// in headless Chromium: the DOM it builds lists every member, and the
// screenshot is a PNG of the window's size with the page drawn on it (not
// a blank image). The screenshot is kept in $SHOAL_UI_SHOT when set.
func TestStatusPageInChromium(t *testing.T) {
	browser := chromium(t)
	ts, names := uiCluster(t)

	dom := string(headless(t, browser, ts.URL+"/", "--dump-dom"))
	for _, want := range append([]string{`id="members"`, "users", "demo"}, names...) {
		if !strings.Contains(dom, want) {
			t.Errorf("DOM lacks %q:\n%.2000s", want, dom)
		}
	}
	if n := strings.Count(dom, `class="member"`); n != len(names) {
		t.Errorf("DOM has %d member rows, want %d", n, len(names))
	}

	shot := filepath.Join(t.TempDir(), "status.png")
	headless(t, browser, ts.URL+"/", "--screenshot="+shot)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 1000 {
		t.Errorf("screenshot is %dx%d, want 1280x1000", b.Dx(), b.Dy())
	}
	colors := map[[3]uint32]int{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 4 {
		for x := b.Min.X; x < b.Max.X; x += 4 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colors[[3]uint32{r >> 8, g >> 8, bl >> 8}]++
		}
	}
	// Text, tables, badges and the partition map in the members' colours.
	if len(colors) < 20 {
		t.Errorf("screenshot has %d colours: the page did not render", len(colors))
	}
	if !hasColor(img, 0x4e, 0x79, 0xa7) || !hasColor(img, 0xf2, 0x8e, 0x2b) {
		t.Error("the partition map is not drawn in the first two members' colours")
	}
	if dst := os.Getenv("SHOAL_UI_SHOT"); dst != "" {
		b, _ := os.ReadFile(shot)
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Error(err)
		}
	}
}

// hasColor reports whether some pixel of img has exactly this colour.
func hasColor(img image.Image, r, g, b uint8) bool {
	bd := img.Bounds()
	for y := bd.Min.Y; y < bd.Max.Y; y++ {
		for x := bd.Min.X; x < bd.Max.X; x++ {
			pr, pg, pb, _ := img.At(x, y).RGBA()
			if uint8(pr>>8) == r && uint8(pg>>8) == g && uint8(pb>>8) == b {
				return true
			}
		}
	}
	return false
}
