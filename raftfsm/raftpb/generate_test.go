package raftpb

import (
	"testing"

	"github.com/ration/ration/internal/protocheck"
)

// TestGeneratedCodeUpToDate fails if command.proto was edited without
// regenerating command.pb.go.
func TestGeneratedCodeUpToDate(t *testing.T) {
	protocheck.UpToDate(t, "raftfsm/raftpb", ".", "go generate ./raftfsm/raftpb/")
}
