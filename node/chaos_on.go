//go:build chaos

package node

import (
	"net/http"
	"time"

	"github.com/ration/ration/chaos/skew"
)

// A chaos build (see chaos/DESIGN.md) answers "now" from a clock the chaos
// harness can move, and serves the endpoint that moves it.

func chaosClock() func() time.Time { return skew.Now }

func chaosRoutes(api http.Handler) http.Handler {
	m := http.NewServeMux()
	m.Handle(skew.Path, skew.Handler())
	m.Handle("/", api)
	return m
}
