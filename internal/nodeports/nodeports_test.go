package nodeports

import (
	"net"
	"strconv"
	"testing"
)

// Ports are never handed out twice, nor next to the actor port of an
// earlier call, and lie in the range. The range is this test's own, below
// the ephemeral range and apart from E2E's and InProcess's, whose tests
// run at the same time.
func TestFreeNeverRepeats(t *testing.T) {
	r := Range{30000, 32000}
	seen := map[int]bool{}
	for range 20 {
		ports := r.Free(t, 4)
		for _, p := range append(ports, ports[3]+1) {
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
		}
		for _, p := range ports {
			if p < r.Lo || p >= r.Hi {
				t.Fatalf("port %d outside %v", p, r)
			}
		}
	}
	// And each was free: a listener can take it.
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(r.Free(t, 1)[0]))
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}
