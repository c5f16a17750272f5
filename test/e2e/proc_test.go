package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ration/ration/internal/nodeports"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// nodeBinary builds cmd/node once for the whole test run.
func nodeBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ration-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "ration-node")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "github.com/ration/ration/cmd/node")...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is one ration-node process.
type proc struct {
	t       *testing.T
	id      string
	dataDir string
	ports   []int // http, grpc, gossip, raft
	extra   []string
	cmd     *exec.Cmd
	logPath string
	exited  chan error
	// tls, when set, is how to reach the node's HTTP port: it serves
	// HTTPS. grpcTLS is how the tests' gRPC clients reach it.
	tls, grpcTLS *tls.Config
}

func newProc(t *testing.T, extra ...string) *proc {
	return &proc{t: t, id: "e2e", dataDir: t.TempDir(), ports: nodeports.E2E.Free(t, 4), extra: extra}
}

func (p *proc) base() string {
	if p.tls != nil {
		return "https://127.0.0.1:" + strconv.Itoa(p.ports[0])
	}
	return "http://127.0.0.1:" + strconv.Itoa(p.ports[0])
}

// httpClient reaches the node's HTTP port.
func (p *proc) httpClient() *http.Client {
	if p.tls == nil {
		return httpc
	}
	return &http.Client{Timeout: httpc.Timeout, Transport: &http.Transport{TLSClientConfig: p.tls}}
}

func (p *proc) grpcAddr() string { return "127.0.0.1:" + strconv.Itoa(p.ports[1]) }

// start launches the node and waits until /readyz says it serves.
func (p *proc) start() {
	t := p.t
	t.Helper()
	args := []string{
		"--node-id", p.id, "--data-dir", p.dataDir, "--bind-host", "127.0.0.1",
		"--http-port", strconv.Itoa(p.ports[0]), "--grpc-port", strconv.Itoa(p.ports[1]),
		"--gossip-port", strconv.Itoa(p.ports[2]), "--raft-port", strconv.Itoa(p.ports[3]),
		"--shards", "8", "--log-level", "warn",
	}
	p.cmd = exec.Command(nodeBinary(t), append(args, p.extra...)...)
	p.logPath = filepath.Join(t.TempDir(), "node.log")
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.exited = make(chan error, 1)
	go func() { p.exited <- p.cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-p.exited:
			t.Fatalf("node exited during start: %v\n%s", err, p.log())
		default:
		}
		resp, err := p.httpClient().Get(p.base() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not ready after 60s\n%s", p.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proc) log() string {
	b, _ := os.ReadFile(p.logPath)
	s := string(b)
	if len(s) > 8000 {
		s = "...\n" + s[len(s)-8000:]
	}
	return s
}

// kill9 kills the process without warning.
func (p *proc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop sends SIGTERM and returns the exit error (nil for a clean exit).
func (p *proc) stop(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		return err
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("no exit within %v after SIGTERM", timeout)
	}
}

// httpc keeps enough idle connections per node for the vectors' concurrent
// replays, so they do not churn through ephemeral ports.
var httpc = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 16},
}

// post sends a JSON body and returns the status and body.
func post(ctx context.Context, url, body string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}
