// Package actorpb holds the two messages nodes send each other's actors,
// Request and Reply (envelope.proto), and the code generated from it. What
// they mean and how they are served belongs to package actorcluster; see
// its DESIGN.md.
//
// Regenerate with `go generate ./cluster/actorcluster/actorpb/`; it needs
// protoc on PATH (Debian: protobuf-compiler). protoc-gen-go is pinned as a
// tool in go.mod.
package actorpb

//go:generate bash generate.sh
