package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ration/ration/tlsfiles/tlsfilestest"
)

// serve accepts TLS connections with cfg until the test ends, answering
// each with one byte once the handshake is done.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				if err := c.(*tls.Conn).Handshake(); err == nil {
					_, _ = c.Write([]byte{1})
				}
			})
		}
	})
	return ln.Addr().String()
}

// dial completes a handshake and a read with cfg, and returns the serial
// of the server's certificate.
func dial(addr string, cfg *tls.Config) (*big.Int, error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	// With TLS 1.3 a refused client certificate shows on the first read.
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

type setup struct {
	dir             string
	ca              *tlsfilestest.CA
	node            tlsfilestest.Issued
	cert, key, cafn string
	files           *Files
}

func newSetup(t *testing.T, withCA bool) *setup {
	s := &setup{dir: t.TempDir(), ca: tlsfilestest.NewCA(t, "test-ca")}
	s.node = s.ca.Issue(t, "node", net.ParseIP("127.0.0.1"))
	s.cert, s.key = s.node.Write(t, s.dir, "node")
	if withCA {
		s.cafn = filepath.Join(s.dir, "ca.crt")
		tlsfilestest.WriteFile(t, s.cafn, s.ca.PEM)
	}
	f, err := Load(s.cert, s.key, s.cafn, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.files = f
	return s
}

func (s *setup) roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(s.ca.PEM)
	return p
}

func clientCert(t *testing.T, ca *tlsfilestest.CA) tls.Certificate {
	t.Helper()
	c := ca.Issue(t, "client")
	cert, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestLoadRefusesWhatDoesNotLoad(t *testing.T) {
	s := newSetup(t, true)
	for name, args := range map[string][3]string{
		"missing cert":   {filepath.Join(s.dir, "nope.crt"), s.key, ""},
		"key mismatch":   {s.cert, writeOther(t, s), ""},
		"CA not PEM":     {s.cert, s.key, s.key + ".txt"},
		"CA unreadable":  {s.cert, s.key, filepath.Join(s.dir, "nope.pem")},
		"key is the crt": {s.cert, s.cert, ""},
	} {
		if name == "CA not PEM" {
			tlsfilestest.WriteFile(t, args[2], []byte("not a certificate"))
		}
		if _, err := Load(args[0], args[1], args[2], nil); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

// writeOther writes the key of another certificate and returns its path.
func writeOther(t *testing.T, s *setup) string {
	_, key := s.ca.Issue(t, "other").Write(t, s.dir, "other")
	return key
}

// With a CA bundle and RequireAndVerifyClientCert, only clients with a
// certificate from that CA get through; without a CA, anyone does.
func TestServerConfigClientCertificates(t *testing.T) {
	s := newSetup(t, true)
	addr := serve(t, s.files.ServerConfig(tls.RequireAndVerifyClientCert))
	base := &tls.Config{RootCAs: s.roots(), ServerName: "127.0.0.1"}

	if _, err := dial(addr, base); err == nil {
		t.Error("a client without a certificate got through")
	}
	other := base.Clone()
	other.Certificates = []tls.Certificate{clientCert(t, tlsfilestest.NewCA(t, "other-ca"))}
	if _, err := dial(addr, other); err == nil {
		t.Error("a client with a certificate from another CA got through")
	}
	good := base.Clone()
	good.Certificates = []tls.Certificate{clientCert(t, s.ca)}
	if serial, err := dial(addr, good); err != nil || serial.Cmp(s.node.Serial) != 0 {
		t.Errorf("a client with a good certificate: serial %v, %v", serial, err)
	}

	open := newSetup(t, false)
	addr = serve(t, open.files.ServerConfig(tls.RequireAndVerifyClientCert))
	if _, err := dial(addr, &tls.Config{RootCAs: open.roots(), ServerName: "127.0.0.1"}); err != nil {
		t.Errorf("without a CA bundle clients need no certificate: %v", err)
	}
}

// A rotated certificate is served from the next check on, with no
// restart; files that do not load keep the previous certificate.
func TestReloadOnChange(t *testing.T) {
	s := newSetup(t, false)
	now := time.Now()
	var mu sync.Mutex
	s.files.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func() { mu.Lock(); now = now.Add(2 * checkEvery); mu.Unlock() }
	addr := serve(t, s.files.ServerConfig(tls.NoClientCert))
	cfg := &tls.Config{RootCAs: s.roots(), ServerName: "127.0.0.1"}

	next := s.ca.Issue(t, "node", net.ParseIP("127.0.0.1"))
	next.Write(t, s.dir, "node")
	if serial, err := dial(addr, cfg); err != nil || serial.Cmp(s.node.Serial) != 0 {
		t.Fatalf("before the next check: serial %v (%v), want the first certificate", serial, err)
	}
	advance()
	if serial, err := dial(addr, cfg); err != nil || serial.Cmp(next.Serial) != 0 {
		t.Fatalf("after the rotation: serial %v (%v), want the new certificate %v", serial, err, next.Serial)
	}

	tlsfilestest.WriteFile(t, s.cert, []byte("half-written"))
	advance()
	if serial, err := dial(addr, cfg); err != nil || serial.Cmp(next.Serial) != 0 {
		t.Fatalf("after a bad update: serial %v (%v), want the last good certificate", serial, err)
	}
}

// Peers are verified by chain, not host name: a node's certificate need
// not name the address it is dialled at. A certificate from another CA is
// refused, and the node presents its own certificate.
func TestPeerConfig(t *testing.T) {
	s := newSetup(t, true)
	// A peer whose certificate names neither 127.0.0.1 nor anything else
	// the dialler knows.
	peer := s.ca.Issue(t, "ration-2.ration.svc")
	pc, pk := peer.Write(t, s.dir, "peer")
	pf, err := Load(pc, pk, s.cafn, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, pf.ServerConfig(tls.RequireAndVerifyClientCert))
	if serial, err := dial(addr, s.files.PeerConfig()); err != nil || serial.Cmp(peer.Serial) != 0 {
		t.Fatalf("peer call: serial %v, %v", serial, err)
	}

	stranger := tlsfilestest.NewCA(t, "stranger-ca").Issue(t, "stranger", net.ParseIP("127.0.0.1"))
	sc, sk := stranger.Write(t, s.dir, "stranger")
	sf, err := Load(sc, sk, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	addr = serve(t, sf.ServerConfig(tls.NoClientCert))
	_, err = dial(addr, s.files.PeerConfig())
	var uae x509.UnknownAuthorityError
	if !errors.As(err, &uae) {
		t.Fatalf("peer with a certificate from another CA: %v, want an unknown authority", err)
	}
}
