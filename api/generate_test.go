package api

import (
	"testing"

	"github.com/ration/ration/internal/protocheck"
)

// TestGeneratedCodeUpToDate regenerates the Go code into a temporary
// directory and fails if it differs from the committed files in rationv1,
// i.e. if a .proto was edited without running `go generate ./api/...`.
func TestGeneratedCodeUpToDate(t *testing.T) {
	protocheck.UpToDate(t, "api/rationv1", "rationv1", "go generate ./api/...")
}
