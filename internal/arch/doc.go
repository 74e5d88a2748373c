// Package arch holds no code: its test checks the package dependency rules
// described in docs/architecture.md, so a forbidden import fails CI.
package arch
