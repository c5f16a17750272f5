package netns

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// CommandError is a failed ip/iptables/tc invocation, with what it printed:
// the tools explain themselves on stderr and nowhere else.
type CommandError struct {
	Args   []string
	Output string
	Err    error
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("netns: %s: %v: %s", strings.Join(e.Args, " "), e.Err, strings.TrimSpace(e.Output))
}

func (e *CommandError) Unwrap() error { return e.Err }

// run executes a command, feeding it stdin when not empty.
func run(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), &CommandError{Args: args, Output: out.String(), Err: err}
	}
	return out.String(), nil
}

// inNS runs a command inside namespace ns.
func inNS(ctx context.Context, ns, stdin string, args ...string) (string, error) {
	return run(ctx, stdin, append([]string{"ip", "netns", "exec", ns}, args...)...)
}
