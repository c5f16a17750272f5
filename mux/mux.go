// Package mux multiplexes many logical listeners over one TCP port.
//
// hashicorp/raft has no multi-raft: a node runs one *raft.Raft per shard,
// each wanting its own raft.StreamLayer. Rather than one port per shard, every
// connection opens with a 5-byte header (connection type, big-endian shard
// id) and the Mux hands it to the Layer registered for that pair. See
// DESIGN.md for the wire format and failure handling.
package mux

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Connection types. Zero is reserved so that a peer writing zeroes, or a
// zero-valued caller, is rejected rather than routed.
const (
	// TypeRaft carries raft RPCs for one shard.
	TypeRaft byte = 1
	// TypeNode carries node-to-node RPCs (e.g. request forwarding); shard 0.
	TypeNode byte = 2
)

// headerLen is the size of the connection header: type byte + uint32 shard.
const headerLen = 5

// DefaultHeaderTimeout bounds how long an accepted connection may take to
// complete TLS and send its header, and how long a registered Layer may take
// to Accept it.
const DefaultHeaderTimeout = 5 * time.Second

var (
	// ErrRegistered is returned by Listen when (type, shard) already has a Layer.
	ErrRegistered = errors.New("mux: already registered")
	// ErrInvalidType is returned for the reserved connection type 0.
	ErrInvalidType = errors.New("mux: invalid connection type 0")
	// ErrServing is returned by a second concurrent call to Serve.
	ErrServing = errors.New("mux: already serving")
)

type key struct {
	typ   byte
	shard uint32
}

// Stats is a snapshot of the Mux counters. Once the Mux is quiet,
// Accepted = Routed + Unregistered + BadHeader + Dropped, except for
// connections cut short by Close, which are counted only as Accepted.
type Stats struct {
	Accepted     uint64 // connections accepted from the listener
	Routed       uint64 // handed to a Layer's Accept
	Unregistered uint64 // valid header naming no registered (type, shard); closed
	BadHeader    uint64 // TLS failure, short/late header, or reserved type; closed
	Dropped      uint64 // registered Layer closed or did not Accept in time; closed
	Layers       int    // currently registered Layers
}

// Option configures a Mux.
type Option func(*Mux)

// WithLogger sets the logger; the default is slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(m *Mux) {
		if l != nil {
			m.log = l
		}
	}
}

// WithHeaderTimeout overrides DefaultHeaderTimeout. Non-positive values are
// ignored: an unbounded wait would let silent clients pin goroutines.
func WithHeaderTimeout(d time.Duration) Option {
	return func(m *Mux) {
		if d > 0 {
			m.timeout = d
		}
	}
}

// WithTLS makes the Mux serve TLS using server and makes Layer.Dial use
// client. The header travels inside the TLS session, so routing information
// is authenticated along with the payload. Either may be nil to leave that
// side in plain TCP (useful only during a rolling migration).
func WithTLS(server, client *tls.Config) Option {
	return func(m *Mux) {
		m.serverTLS = server
		m.clientTLS = client
	}
}

// WithAdvertiseAddr sets the address reported by Addr (and so by every
// Layer). raft uses StreamLayer.Addr as its own address in RPCs, which
// followers report as the leader's address; a wildcard bind address such as
// ":8300" is useless to them, so nodes bound that way must advertise a
// routable host:port.
func WithAdvertiseAddr(addr string) Option {
	return func(m *Mux) {
		if addr != "" {
			m.advertise = tcpAddr(addr)
		}
	}
}

type tcpAddr string

func (a tcpAddr) Network() string { return "tcp" }
func (a tcpAddr) String() string  { return string(a) }

// Mux accepts connections on one listener and routes each to the Layer
// registered for the (type, shard) in its header.
type Mux struct {
	ln        net.Listener
	log       *slog.Logger
	timeout   time.Duration
	serverTLS *tls.Config
	clientTLS *tls.Config
	advertise net.Addr

	// ctx is cancelled by Close; in-flight handshakes watch it so that Close
	// does not wait out their deadlines.
	ctx     context.Context
	cancel  context.CancelFunc
	serving atomic.Bool

	mu     sync.RWMutex
	layers map[key]*Layer
	// gone holds the keys whose Layer was closed and not registered
	// again: a connection for one of them is the expected aftermath of a
	// group closing here (a shard moved away, or the node stopping), not
	// a peer that has the wrong idea of what this node hosts.
	gone   map[key]bool
	closed bool
	// wg counts connection handlers. Add is only called under mu while
	// !closed, so it never races with the Wait in Close.
	wg sync.WaitGroup

	accepted, routed, unregistered, badHeader, dropped atomic.Uint64
}

// New returns a Mux that will route connections accepted from ln once Serve
// is called. The Mux owns ln and closes it in Close.
func New(ln net.Listener, opts ...Option) *Mux {
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mux{
		ln:      ln,
		log:     slog.Default(),
		timeout: DefaultHeaderTimeout,
		ctx:     ctx,
		cancel:  cancel,
		layers:  make(map[key]*Layer),
		gone:    make(map[key]bool),
	}
	for _, o := range opts {
		o(m)
	}
	m.log = m.log.With("component", "mux")
	return m
}

// Addr is the address peers should dial: the advertised address if one was
// set, else the listener's.
func (m *Mux) Addr() net.Addr {
	if m.advertise != nil {
		return m.advertise
	}
	return m.ln.Addr()
}

// Stats returns a snapshot of the counters.
func (m *Mux) Stats() Stats {
	m.mu.RLock()
	n := len(m.layers)
	m.mu.RUnlock()
	return Stats{
		Accepted:     m.accepted.Load(),
		Routed:       m.routed.Load(),
		Unregistered: m.unregistered.Load(),
		BadHeader:    m.badHeader.Load(),
		Dropped:      m.dropped.Load(),
		Layers:       n,
	}
}

// Serve accepts connections until Close, returning nil after Close. Each
// connection's handshake runs in its own goroutine so a slow client cannot
// delay others.
func (m *Mux) Serve() error {
	if !m.serving.CompareAndSwap(false, true) {
		return ErrServing
	}
	defer m.serving.Store(false)

	var backoff time.Duration
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			if m.ctx.Err() != nil {
				return nil
			}
			// Resource exhaustion (EMFILE etc.) is transient; spinning on it
			// would burn CPU and flood the log, giving up would take the node
			// off the network.
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				m.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-m.ctx.Done():
					return nil
				}
			}
			return fmt.Errorf("mux: accept: %w", err)
		}
		backoff = 0
		m.accepted.Add(1)

		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			conn.Close()
			return nil
		}
		m.wg.Add(1)
		m.mu.Unlock()
		go m.handle(conn)
	}
}

// handle performs the handshake on one raw connection and delivers it.
func (m *Mux) handle(raw net.Conn) {
	defer m.wg.Done()

	// Until hand-off the Mux owns the connection, and Close must be able to
	// abort a handshake that is blocked in a read.
	stop := context.AfterFunc(m.ctx, func() { raw.Close() })

	conn, k, err := m.handshake(raw)
	if err != nil {
		stop()
		raw.Close()
		if m.ctx.Err() != nil {
			return
		}
		m.badHeader.Add(1)
		m.log.Debug("dropping connection: bad handshake", "remote", raw.RemoteAddr(), "err", err)
		return
	}
	if !stop() {
		return // Close already closed raw.
	}

	m.mu.RLock()
	l, gone := m.layers[k], m.gone[k]
	m.mu.RUnlock()
	if l == nil {
		m.unregistered.Add(1)
		raw.Close()
		level := slog.LevelWarn
		if gone {
			level = slog.LevelDebug
		}
		m.log.Log(context.Background(), level, "dropping connection for unregistered listener",
			"remote", raw.RemoteAddr(), "type", k.typ, "shard", k.shard, "closed_here", gone)
		return
	}

	// The channel is unbuffered, so a successful send means Accept returned
	// the conn to its caller: no conn can be stranded in a queue when the
	// Layer closes. Waiting goroutines are the backlog, bounded by the timer.
	timer := time.NewTimer(m.timeout)
	defer timer.Stop()
	select {
	case l.conns <- conn:
		m.routed.Add(1)
		return
	case <-m.ctx.Done():
		raw.Close()
		return
	case <-l.done:
		if m.ctx.Err() != nil {
			// Close shuts every Layer; that is shutdown, not a drop.
			raw.Close()
			return
		}
		m.log.Debug("dropping connection: listener closed",
			"remote", raw.RemoteAddr(), "type", k.typ, "shard", k.shard)
	case <-timer.C:
		m.log.Warn("dropping connection: listener did not accept in time",
			"remote", raw.RemoteAddr(), "type", k.typ, "shard", k.shard, "timeout", m.timeout)
	}
	m.dropped.Add(1)
	raw.Close()
}

// handshake completes TLS (if configured) and reads the header, all under
// one deadline, then clears the deadline so the Layer's owner starts clean.
func (m *Mux) handshake(raw net.Conn) (net.Conn, key, error) {
	if err := raw.SetDeadline(time.Now().Add(m.timeout)); err != nil {
		return nil, key{}, err
	}
	conn := raw
	if m.serverTLS != nil {
		tc := tls.Server(raw, m.serverTLS)
		if err := tc.Handshake(); err != nil {
			return nil, key{}, fmt.Errorf("tls handshake: %w", err)
		}
		conn = tc
	}
	var hdr [headerLen]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return nil, key{}, fmt.Errorf("read header: %w", err)
	}
	k := key{typ: hdr[0], shard: binary.BigEndian.Uint32(hdr[1:])}
	if k.typ == 0 {
		return nil, key{}, ErrInvalidType
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		return nil, key{}, err
	}
	return conn, k, nil
}

// Listen registers a Layer for (typ, shard). Connections that arrived before
// registration were already closed; only new ones are delivered.
func (m *Mux) Listen(typ byte, shard uint32) (*Layer, error) {
	if typ == 0 {
		return nil, ErrInvalidType
	}
	k := key{typ: typ, shard: shard}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("mux: listen type %d shard %d: %w", typ, shard, net.ErrClosed)
	}
	if _, ok := m.layers[k]; ok {
		return nil, fmt.Errorf("mux: listen type %d shard %d: %w", typ, shard, ErrRegistered)
	}
	l := &Layer{
		m:     m,
		key:   k,
		conns: make(chan net.Conn),
		done:  make(chan struct{}),
	}
	m.layers[k] = l
	delete(m.gone, k)
	return l, nil
}

// Close stops Serve, closes the listener and every Layer, aborts in-flight
// handshakes and waits for their goroutines. Connections already returned by
// Accept belong to their callers and are left open.
func (m *Mux) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	layers := m.layers
	m.layers = make(map[key]*Layer)
	m.mu.Unlock()

	m.cancel()
	err := m.ln.Close()
	for _, l := range layers {
		l.shut()
	}
	m.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("mux: close listener: %w", err)
	}
	return nil
}

// Layer is the listener for one (type, shard). It implements
// raft.StreamLayer, so it can back raft.NewNetworkTransport directly.
type Layer struct {
	m    *Mux
	key  key
	once sync.Once
	// conns is unbuffered; see Mux.handle.
	conns chan net.Conn
	done  chan struct{}
}

var _ raft.StreamLayer = (*Layer)(nil)

// Accept waits for the next connection routed to this Layer. It returns an
// error wrapping net.ErrClosed once the Layer or the Mux is closed.
func (l *Layer) Accept() (net.Conn, error) {
	return l.AcceptContext(context.Background())
}

// AcceptContext is Accept with cancellation.
func (l *Layer) AcceptContext(ctx context.Context) (net.Conn, error) {
	// Prefer reporting closure over a conn racing in alongside it.
	select {
	case <-l.done:
		return nil, l.closedErr()
	default:
	}
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.closedErr()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *Layer) closedErr() error {
	return fmt.Errorf("mux: accept type %d shard %d: %w", l.key.typ, l.key.shard, net.ErrClosed)
}

// Close unregisters the Layer, so the same (type, shard) may be registered
// again, and unblocks Accept. It is idempotent.
func (l *Layer) Close() error {
	l.m.mu.Lock()
	if l.m.layers[l.key] == l {
		delete(l.m.layers, l.key)
		l.m.gone[l.key] = true
	}
	l.m.mu.Unlock()
	l.shut()
	return nil
}

func (l *Layer) shut() { l.once.Do(func() { close(l.done) }) }

// Addr returns the Mux's address: all Layers share one port, so this is what
// peers dial to reach any of them.
func (l *Layer) Addr() net.Addr { return l.m.Addr() }

// Dial connects to the Mux at address and asks for this Layer's (type,
// shard) there, using the Mux's client TLS config if any.
func (l *Layer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return Dial(string(address), l.key.typ, l.key.shard, timeout, l.m.clientTLS)
}

// Dial connects to the Mux at addr and requests (typ, shard). A
// non-positive timeout means no timeout. tlsCfg nil means plain TCP.
func Dial(addr string, typ byte, shard uint32, timeout time.Duration, tlsCfg *tls.Config) (net.Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return DialContext(ctx, addr, typ, shard, tlsCfg)
}

// DialContext is Dial bounded by ctx rather than a timeout. ctx bounds only
// connection setup; the returned conn is not tied to it.
func DialContext(ctx context.Context, addr string, typ byte, shard uint32, tlsCfg *tls.Config) (net.Conn, error) {
	if typ == 0 {
		return nil, ErrInvalidType
	}
	var (
		conn net.Conn
		err  error
		nd   net.Dialer
	)
	if tlsCfg != nil {
		td := tls.Dialer{NetDialer: &nd, Config: tlsCfg}
		conn, err = td.DialContext(ctx, "tcp", addr)
	} else {
		conn, err = nd.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("mux: dial %s type %d shard %d: %w", addr, typ, shard, err)
	}
	if err := writeHeader(ctx, conn, typ, shard); err != nil {
		conn.Close()
		return nil, fmt.Errorf("mux: dial %s type %d shard %d: write header: %w", addr, typ, shard, err)
	}
	return conn, nil
}

func writeHeader(ctx context.Context, conn net.Conn, typ byte, shard uint32) error {
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetWriteDeadline(dl); err != nil {
			return err
		}
		defer conn.SetWriteDeadline(time.Time{})
	}
	hdr := binary.BigEndian.AppendUint32(make([]byte, 1, headerLen), shard)
	hdr[0] = typ
	_, err := conn.Write(hdr)
	return err
}
