package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ration/ration/client"
	"github.com/ration/ration/client/clienttest"
	"github.com/ration/ration/tlsfiles/tlsfilestest"
)

// A node that requires a client certificate, reached without one or with
// one its CA did not sign, or a server this client does not trust: the
// call fails with ErrTLS at once instead of being retried as UNAVAILABLE
// for the whole budget.
func TestTLSFailuresAreNotRetried(t *testing.T) {
	ca, other := tlsfilestest.NewCA(t, "ration-ca"), tlsfilestest.NewCA(t, "other-ca")
	server := keyPair(t, ca.Issue(t, "node", net.ParseIP("127.0.0.1")))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{server}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
	})))
	clienttest.NewServer(clienttest.Options{}).Register(gs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	good := keyPair(t, ca.Issue(t, "scheduler"))
	otherPool := x509.NewCertPool()
	otherPool.AppendCertsFromPEM(other.PEM)
	for name, cfg := range map[string]*tls.Config{
		"no client certificate":          {RootCAs: pool},
		"a certificate of another CA":    {RootCAs: pool, Certificates: []tls.Certificate{keyPair(t, other.Issue(t, "intruder"))}},
		"a server this client distrusts": {RootCAs: otherPool, Certificates: []tls.Certificate{good}},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := client.New(context.Background(), client.Options{
				Endpoints: []string{lis.Addr().String()}, TLS: cfg, RetryBudget: 20 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			_, err = c.Balance(context.Background(), "u", nil)
			if !errors.Is(err, client.ErrTLS) {
				t.Fatalf("got %v, want ErrTLS", err)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Fatalf("took %v: retried within the 20 s budget", took)
			}
			t.Logf("%v", err)
		})
	}

	c, err := client.New(context.Background(), client.Options{
		Endpoints: []string{lis.Addr().String()}, TLS: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{good}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Balance(context.Background(), "u", nil); err != nil {
		t.Fatalf("with the right certificate: %v", err)
	}
}

func keyPair(t *testing.T, c tlsfilestest.Issued) tls.Certificate {
	t.Helper()
	kp, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}
