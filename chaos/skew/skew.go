// Package skew is a wall clock that a chaos test can move: Now is
// time.Now shifted by an offset that Set changes at run time, process-wide.
//
// Only builds with the chaos tag use it (node's "now", and the applyclock
// planted bug of test/chaos/selftest); a production binary does not link
// it. See ../DESIGN.md.
package skew

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"
)

// offset is in nanoseconds, read on every Now: an atomic keeps readers off
// any lock.
var offset atomic.Int64

// Now is the skewed wall clock.
func Now() time.Time { return time.Now().Add(Offset()) }

// Offset is how far Now is from time.Now.
func Offset() time.Duration { return time.Duration(offset.Load()) }

// Set moves Now to time.Now+d; Set(0) puts it back.
func Set(d time.Duration) { offset.Store(int64(d)) }

// Path is where Handler is served on a node built with the chaos tag.
const Path = "/debug/chaos/clock"

// State is the clock as Handler reports it.
type State struct {
	Offset   string `json:"offset"`    // Go duration, e.g. "-1h0m0s"
	OffsetNS int64  `json:"offset_ns"` // the same in nanoseconds
	NowMS    int64  `json:"now_ms"`    // the skewed clock, Unix milliseconds
}

func current() State {
	d := Offset()
	return State{Offset: d.String(), OffsetNS: int64(d), NowMS: Now().UnixMilli()}
}

// Handler serves the clock: GET reports it, POST ?offset=<Go duration>
// sets the offset (0 restores the real clock). Both answer State as JSON.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
		case http.MethodPost:
			raw := r.URL.Query().Get("offset")
			d, err := time.ParseDuration(raw)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{
					"error": fmt.Sprintf("offset must be a Go duration such as -1h, 90s or 0: %q", raw),
				})
				return
			}
			Set(d)
		default:
			w.Header().Set("Allow", "GET, POST")
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "GET or POST"})
			return
		}
		writeJSON(w, http.StatusOK, current())
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
