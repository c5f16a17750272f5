// Package api holds the definition of Ration's public gRPC API, in
// ration/v1/*.proto, and the tooling that generates its Go code into the
// rationv1 package. See DESIGN.md.
//
// Regenerate with `go generate ./api/...` (or `make generate`); it needs
// protoc on PATH (Debian: protobuf-compiler). The Go plugins are pinned as
// tools in go.mod.
package api

//go:generate bash generate.sh
