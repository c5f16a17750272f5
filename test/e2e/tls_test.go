package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/tlsfiles/tlsfilestest"
)

// pki is a test CA, its bundle on disk, and client TLS configs trusting it:
// without a client certificate, and with one it signed.
type pki struct {
	dir, caFile         string
	ca                  *tlsfilestest.CA
	anonymous, withCert *tls.Config
}

func newPKI(t *testing.T) pki {
	t.Helper()
	k := pki{dir: t.TempDir(), ca: tlsfilestest.NewCA(t, "ration-test-ca")}
	k.caFile = filepath.Join(k.dir, "ca.crt")
	tlsfilestest.WriteFile(t, k.caFile, k.ca.PEM)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(k.ca.PEM)
	c := k.ca.Issue(t, "scheduler")
	cert, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	k.anonymous = &tls.Config{RootCAs: roots}
	k.withCert = &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}
	return k
}

// A node with --tls-cert, --tls-key and --tls-ca serves gRPC and HTTP over
// TLS, asks API clients for a certificate from the CA (probes and metrics
// excepted), and picks up a rotated certificate without a restart.
func TestTLSNode(t *testing.T) {
	k := newPKI(t)
	dir, ca, caFile, anonymous, withCert := k.dir, k.ca, k.caFile, k.anonymous, k.withCert
	first := ca.Issue(t, "ration-0", net.ParseIP("127.0.0.1"))
	certFile, keyFile := first.Write(t, dir, "node")

	p := newProc(t, "--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", caFile)
	p.tls = anonymous // readiness: /readyz needs no certificate
	p.start()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// gRPC: a client certificate is required.
	noCert, err := client.New(ctx, client.Options{Endpoints: []string{p.grpcAddr()}, TLS: anonymous, RetryBudget: -1, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer noCert.Close()
	if _, err := noCert.Grant(ctx, "tls-u", client.Grant{ID: "g0", Amount: 1}); err == nil {
		t.Fatal("gRPC grant without a client certificate succeeded")
	}
	good, err := client.New(ctx, client.Options{Endpoints: []string{p.grpcAddr()}, TLS: withCert})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if _, err := good.Grant(ctx, "tls-u", client.Grant{ID: "g1", Amount: 10}); err != nil {
		t.Fatalf("gRPC grant with a client certificate: %v", err)
	}
	if b, err := good.Balance(ctx, "tls-u", nil); err != nil || b.Balance != 10 {
		t.Fatalf("gRPC balance: %+v, %v", b, err)
	}

	// HTTP: the API wants the certificate, probes and metrics do not.
	httpAnon := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: anonymous}}
	httpCert := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: withCert}}
	for _, tc := range []struct {
		c    *http.Client
		path string
		want int
	}{
		{httpAnon, "/healthz", 200},
		{httpAnon, "/readyz", 200},
		{httpAnon, "/metrics", 200},
		{httpAnon, "/v1/users/tls-u/balance", 401},
		{httpCert, "/v1/users/tls-u/balance", 200},
	} {
		resp, err := tc.c.Get(p.base() + tc.path)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.path, resp.StatusCode, tc.want)
		}
	}
	resp, err := httpCert.Post(p.base()+"/v1/users/tls-u/grants", "application/json", strings.NewReader(`{"id":"g2","amount":5,"timestamp":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST grant with a client certificate: %d", resp.StatusCode)
	}
	// Plaintext is not served.
	if resp, err := httpc.Get(strings.Replace(p.base(), "https://", "http://", 1) + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP served")
		}
	}

	// Rotation: new files on disk, new handshakes get the new certificate.
	next := ca.Issue(t, "ration-0", net.ParseIP("127.0.0.1"))
	next.Write(t, dir, "node")
	deadline := time.Now().Add(30 * time.Second)
	for {
		serial, err := serverSerial(p.base(), anonymous)
		if err == nil && serial.Cmp(next.Serial) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still serving serial %v (%v) 30 s after the rotation, want %v", serial, err, next.Serial)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := good.Deduct(ctx, "tls-u", client.Deduction{ID: "d1", Amount: 3, Timestamp: 2}); err != nil {
		t.Fatalf("gRPC deduct after the rotation: %v", err)
	}
}

// serverSerial is the serial of the certificate a new handshake with base
// gets.
func serverSerial(base string, cfg *tls.Config) (*big.Int, error) {
	conn, err := tls.Dial("tcp", strings.TrimPrefix(base, "https://"), cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// A cluster with TLS on: raft between nodes, actor traffic and the nodes'
// status calls to each other all go over TLS with the node certificate.
// Writes sent to any node land on their shard's leader, every replica
// applies them, and the raft port does not speak plaintext.
func TestTLSCluster(t *testing.T) {
	k := newPKI(t)
	withCert := k.withCert
	certFile, keyFile := k.ca.Issue(t, "ration-node", net.ParseIP("127.0.0.1")).Write(t, k.dir, "node")
	procs := clusterProcs(t, 3, "--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", k.caFile)
	for _, p := range procs {
		p.tls, p.grpcTLS = k.anonymous, withCert
	}
	startAll(procs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Every node takes a grant for every user: most are forwarded (the
	// clients do not route, so that forwards go over TLS).
	const users = 12
	var clients []*client.Client
	for _, p := range procs {
		cl, err := client.New(ctx, client.Options{Endpoints: []string{p.grpcAddr()}, TLS: withCert, DisableRouting: true})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		clients = append(clients, cl)
	}
	for i, cl := range clients {
		for u := range users {
			if _, err := cl.Grant(ctx, fmt.Sprintf("tls-c-u%d", u), client.Grant{ID: fmt.Sprintf("g%d", i), Amount: 1}); err != nil {
				t.Fatalf("grant through %s: %v", procs[i].id, err)
			}
		}
	}
	for i, cl := range clients {
		for u := range users {
			if b, err := cl.Balance(ctx, fmt.Sprintf("tls-c-u%d", u), nil); err != nil || b.Balance != int64(len(procs)) {
				t.Fatalf("balance of tls-c-u%d through %s: %+v, %v; want %d", u, procs[i].id, b, err, len(procs))
			}
		}
	}
	// A client that routes reaches the leaders over TLS too, at the
	// addresses they advertise.
	routed, err := client.New(ctx, client.Options{Endpoints: []string{procs[0].grpcAddr()}, TLS: withCert})
	if err != nil {
		t.Fatal(err)
	}
	defer routed.Close()
	for routed.RouteStats().Direct == 0 {
		for u := range users {
			if b, err := routed.Balance(ctx, fmt.Sprintf("tls-c-u%d", u), nil); err != nil || b.Balance != int64(len(procs)) {
				t.Fatalf("balance of tls-c-u%d through a routing client: %+v, %v; want %d", u, b, err, len(procs))
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("the routing client never reached a leader directly: %+v", routed.RouteStats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkReplicasConverge(t, procs)

	// The raft and actor ports end a plaintext connection at once; a
	// plaintext mux would hold it open, waiting for raft's first message,
	// and a plaintext gRPC server for the rest of an HTTP/2 preface.
	for _, port := range []int{procs[0].ports[3], procs[0].ports[3] + 1} {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0}); err != nil {
			t.Fatal(err)
		}
		_, err = conn.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("port %d held a plaintext connection open (read: %v)", port, err)
		}
	}
}
