// Package tlsfiles holds a node's TLS files (certificate, private key and
// an optional CA bundle) and re-reads them when they change on disk, so
// that rotating them, e.g. by updating a Kubernetes Secret, needs no
// restart. It hands out the tls.Configs the node's listeners and its calls
// to other nodes use.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// checkEvery bounds how often the files are looked at (one stat each).
const checkEvery = time.Second

// Files is a node's TLS material. Its methods are safe for concurrent use.
type Files struct {
	certFile, keyFile, caFile string
	log                       *slog.Logger
	now                       func() time.Time

	mu      sync.Mutex
	cur     *material
	checked time.Time
}

// material is one consistent reading of the files.
type material struct {
	cert   *tls.Certificate
	pool   *x509.CertPool // nil without a CA file
	stamps [3]stamp
}

type stamp struct {
	mod  time.Time
	size int64
}

// Load reads the files now, and fails if they do not make a usable
// certificate (and CA bundle, when caFile is set). logger may be nil.
func Load(certFile, keyFile, caFile string, logger *slog.Logger) (*Files, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &Files{certFile: certFile, keyFile: keyFile, caFile: caFile, log: logger, now: time.Now}
	m, err := f.read()
	if err != nil {
		return nil, err
	}
	f.cur, f.checked = m, f.now()
	return f, nil
}

// HasCA reports whether a CA bundle was given: clients and peers must then
// present certificates it signed.
func (f *Files) HasCA() bool { return f.caFile != "" }

func (f *Files) stamps() ([3]stamp, error) {
	var out [3]stamp
	for i, name := range []string{f.certFile, f.keyFile, f.caFile} {
		if name == "" {
			continue
		}
		fi, err := os.Stat(name)
		if err != nil {
			return out, err
		}
		out[i] = stamp{fi.ModTime(), fi.Size()}
	}
	return out, nil
}

func (f *Files) read() (*material, error) {
	// Stamps first: a file replaced while being read is read again at the
	// next check.
	st, err := f.stamps()
	if err != nil {
		return nil, fmt.Errorf("tlsfiles: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsfiles: certificate %s, key %s: %w", f.certFile, f.keyFile, err)
	}
	m := &material{cert: &cert, stamps: st}
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return nil, fmt.Errorf("tlsfiles: %w", err)
		}
		m.pool = x509.NewCertPool()
		if !m.pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tlsfiles: CA bundle %s: no PEM certificates", f.caFile)
		}
	}
	return m, nil
}

// current returns the latest good reading: the files are looked at again
// at most once per checkEvery, and re-read if they changed. A change that
// does not load (a Secret half-updated, a bad file) keeps the old reading
// and is logged; the next check tries again.
func (f *Files) current() *material {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if now.Sub(f.checked) < checkEvery {
		return f.cur
	}
	f.checked = now
	st, err := f.stamps()
	if err == nil && st == f.cur.stamps {
		return f.cur
	}
	m, err := f.read()
	if err != nil {
		f.log.Warn("TLS files changed but do not load; keeping the previous ones", "err", err)
		return f.cur
	}
	f.log.Info("TLS files reloaded", "cert", f.certFile)
	f.cur = m
	return m
}

// ServerConfig is for a listener. With a CA bundle, clientAuth decides
// what is asked of clients (tls.RequireAndVerifyClientCert, or
// tls.VerifyClientCertIfGiven where some paths must stay open to probes);
// without one, clients are not asked for certificates.
func (f *Files) ServerConfig(clientAuth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := f.current()
			c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*m.cert}}
			if m.pool != nil {
				c.ClientCAs, c.ClientAuth = m.pool, clientAuth
			}
			return c, nil
		},
	}
}

// PeerConfig is for this node's calls to other nodes' APIs. Peers are
// dialled by address (a pod IP that changes with every restart), which
// their certificates need not name, so the chain is verified, against the
// CA bundle or else the system roots, but not the host name. The node
// presents its own certificate, for peers that require one.
func (f *Files) PeerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verified below, without the host name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("tlsfiles: peer presented no certificate")
			}
			opts := x509.VerifyOptions{Roots: f.current().pool, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
				return fmt.Errorf("tlsfiles: peer certificate: %w", err)
			}
			return nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return f.current().cert, nil
		},
	}
}
