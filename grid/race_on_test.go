//go:build race

package grid_test

// raceEnabled is set when the tests run under the race detector, which
// makes copying large values many times slower.
const raceEnabled = true
