package node

import (
	"net/http"
)

// openPaths are served without a client certificate when the node
// requires them: kubelet probes and Prometheus scrapes often come without
// one, and these paths neither read nor change a ledger.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// requireClientCert refuses, with 401, requests to other paths that came
// without a certificate the TLS layer verified against the CA bundle.
func requireClientCert(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !openPaths[r.URL.Path] && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"code":"unauthenticated","message":"a client certificate signed by the node's CA is required"}}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}
