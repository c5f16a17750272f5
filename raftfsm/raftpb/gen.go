// Package raftpb holds the protobuf messages carried in the raft log entries
// of a shard: command.proto and the code generated from it. The framing (the
// type byte in front of each message) and the meaning of the messages belong
// to package raftfsm; see raftfsm/DESIGN.md.
//
// Regenerate with `go generate ./raftfsm/raftpb/`; it needs protoc on PATH
// (Debian: protobuf-compiler). protoc-gen-go is pinned as a tool in go.mod.
package raftpb

//go:generate bash generate.sh
