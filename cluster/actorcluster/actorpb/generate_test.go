package actorpb

import (
	"testing"

	"github.com/ration/ration/internal/protocheck"
)

// TestGeneratedCodeUpToDate fails if envelope.proto was edited without
// regenerating envelope.pb.go.
func TestGeneratedCodeUpToDate(t *testing.T) {
	protocheck.UpToDate(t, "cluster/actorcluster/actorpb", ".", "go generate ./cluster/actorcluster/actorpb/")
}
