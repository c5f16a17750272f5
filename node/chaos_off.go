//go:build !chaos

package node

import (
	"net/http"
	"time"
)

// Without the chaos tag the clock is the real one and no debug route is
// added; see chaos_on.go.

func chaosClock() func() time.Time { return time.Now }

func chaosRoutes(api http.Handler) http.Handler { return api }
