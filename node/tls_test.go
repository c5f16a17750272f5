package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/tlsfiles"
	"github.com/ration/ration/tlsfiles/tlsfilestest"
)

type statusOnly struct {
	rationv1.UnimplementedAdminServer
}

func (statusOnly) Status(context.Context, *rationv1.StatusRequest) (*rationv1.StatusResponse, error) {
	return &rationv1.StatusResponse{NodeId: "peer"}, nil
}

// A node that serves TLS calls its peers over TLS with its own certificate,
// which peers that require client certificates accept: the rebalancer's
// and formation's status calls work with TLS on.
func TestPeerStatusOverTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlsfilestest.NewCA(t, "ca")
	caFile := filepath.Join(dir, "ca.crt")
	tlsfilestest.WriteFile(t, caFile, ca.PEM)
	load := func(name string) *tlsfiles.Files {
		// Peers are dialled by address; the certificate names a DNS name
		// only, as a pod's would.
		c, k := ca.Issue(t, name+".ration.svc").Write(t, dir, name)
		f, err := tlsfiles.Load(c, k, caFile, nil)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	server, self := load("peer"), load("self")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(server.ServerConfig(tls.RequireAndVerifyClientCert))))
	rationv1.RegisterAdminServer(gs, statusOnly{})
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := &peers{creds: credentials.NewTLS(self.PeerConfig())}
	defer p.close()
	st, err := p.status(ctx, ln.Addr().String())
	if err != nil || st.GetNodeId() != "peer" {
		t.Fatalf("status over TLS: %v, %v", st, err)
	}
	plain := &peers{}
	defer plain.close()
	short, cancel2 := context.WithTimeout(ctx, time.Second)
	defer cancel2()
	if _, err := plain.status(short, ln.Addr().String()); err == nil {
		t.Fatal("a plaintext status call to a TLS peer succeeded")
	}
}

// With a CA bundle, the API paths need a verified client certificate; the
// probe and metrics paths do not.
func TestRequireClientCert(t *testing.T) {
	h := requireClientCert(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	for _, tc := range []struct {
		path     string
		verified bool
		want     int
	}{
		{"/v1/users/u/grants", false, http.StatusUnauthorized},
		{"/v1/users/u/grants", true, http.StatusTeapot},
		{"/healthz", false, http.StatusTeapot},
		{"/readyz", false, http.StatusTeapot},
		{"/metrics", false, http.StatusTeapot},
	} {
		r := httptest.NewRequest("GET", tc.path, nil)
		r.TLS = &tls.ConnectionState{}
		if tc.verified {
			r.TLS.VerifiedChains = [][]*x509.Certificate{{nil}}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%s (verified %v): %d, want %d", tc.path, tc.verified, w.Code, tc.want)
		}
		// The refusal speaks the API's error shape, in its lower-case codes.
		if w.Code == http.StatusUnauthorized && !strings.Contains(w.Body.String(), `{"error":{"code":"unauthenticated"`) {
			t.Errorf("401 body %q, want the API's error shape with code unauthenticated", w.Body.String())
		}
	}
}
