package client_test

import (
	"sync"
	"testing"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/ledger"
)

func TestNewID(t *testing.T) {
	before := time.Now().UnixMilli()
	prev := ""
	for i := range 10000 {
		id := client.NewID()
		if len(id) != client.IDLen || !ledger.ValidID(id) {
			t.Fatalf("NewID() = %q: want %d valid characters", id, client.IDLen)
		}
		if id <= prev {
			t.Fatalf("id %d: %q does not sort after %q", i, id, prev)
		}
		prev = id
	}
	// The first 10 characters are the 48-bit millisecond timestamp.
	const alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
	var ms int64
	for _, c := range client.NewID()[:10] {
		ms = ms<<5 | int64(indexOf(alphabet, c))
	}
	if after := time.Now().UnixMilli(); ms < before || ms > after+1 {
		t.Errorf("timestamp part %d not within [%d, %d]", ms, before, after)
	}
}

func indexOf(s string, c rune) int {
	for i, r := range s {
		if r == c {
			return i
		}
	}
	return -1
}

func TestNewIDConcurrent(t *testing.T) {
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
		wg   sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			ids := make([]string, 2000)
			for i := range ids {
				ids[i] = client.NewID()
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				if seen[id] {
					t.Errorf("duplicate id %q", id)
				}
				seen[id] = true
			}
		})
	}
	wg.Wait()
}
