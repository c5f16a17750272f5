// Package nodeports hands out ports for the nodes that tests start on
// 127.0.0.1: an HTTP, gRPC, gossip and raft port each, and the port after
// raft's, which carries actor traffic.
package nodeports

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Range is where a test package draws its ports from. Packages whose
// tests run at the same time, in separate processes, use disjoint ranges;
// all lie below the kernel's ephemeral range (from 32768), so that the
// ":0" listeners and outgoing connections of other tests cannot take a
// port between the check and the node's bind.
type Range struct{ Lo, Hi int }

var (
	// E2E is test/e2e's.
	E2E = Range{20000, 30000}
	// InProcess is for the tests that run nodes inside the test binary
	// (node/).
	InProcess = Range{10000, 20000}
)

var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// Free returns n ports that were free for TCP and UDP (gossip uses both) a
// moment ago, and that no earlier call in this process returned: the nodes
// of a cluster get their ports before any of them binds, so a check that
// a port is free cannot tell them apart. The last is for raft, and the
// port after it is free too.
func (r Range) Free(tb testing.TB, n int) []int {
	tb.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100000 {
			tb.Fatalf("nodeports: no %d free ports in %d-%d", n, r.Lo, r.Hi)
		}
		port := r.Lo + rand.IntN(r.Hi-r.Lo-1)
		if handedOut.ports[port] || handedOut.ports[port+1] || handedOut.ports[port-1] {
			continue
		}
		if len(ports) == n-1 && !freeTCP(port+1) {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		ports = append(ports, port)
		handedOut.ports[port] = true
	}
	handedOut.ports[ports[n-1]+1] = true
	return ports
}

func freeTCP(port int) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
