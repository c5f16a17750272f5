// Package raftpb holds the protobuf messages carried in the raft log entries
// of a shard: command.proto and the code generated from it. The framing (the
// type byte in front of each message) and the meaning of the messages belong
// to package raftfsm; see raftfsm/DESIGN.md.
//
// Regenerate with `make generate` (buf, see buf.yaml at the repository
// root); `make proto` checks that the committed code is current and that no
// change breaks the encoding of the entries already in replicas' logs.
package raftpb
