// Package docscheck has no code of its own: its tests hold the documentation
// to the code, so that a list written by hand fails a test when it drifts.
// They check that docs/ARCHITECTURE.md's package diagram and package table
// match `go list` (the packages, their imports, every arrow pointing down),
// that its dependency list matches go.mod's direct requirements, that
// docs/configuration.md's table lists exactly service.Config's variables
// with their defaults, and that every relative link of README.md and
// docs/*.md reaches an existing file and heading.
package docscheck
