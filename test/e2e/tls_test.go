package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/tlsfiles/tlsfilestest"
)

// A node with --tls-cert, --tls-key and --tls-ca serves gRPC and HTTP over
// TLS, asks API clients for a certificate from the CA (probes and metrics
// excepted), and picks up a rotated certificate without a restart.
func TestTLSNode(t *testing.T) {
	dir := t.TempDir()
	ca := tlsfilestest.NewCA(t, "ration-test-ca")
	caFile := filepath.Join(dir, "ca.crt")
	tlsfilestest.WriteFile(t, caFile, ca.PEM)
	first := ca.Issue(t, "ration-0", net.ParseIP("127.0.0.1"))
	certFile, keyFile := first.Write(t, dir, "node")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	c := ca.Issue(t, "scheduler")
	cert, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	anonymous := &tls.Config{RootCAs: roots}
	withCert := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}

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
