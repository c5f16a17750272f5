package netns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CleanupStale removes what earlier runs with this prefix left behind:
// namespaces (and the processes in them), bridges, veths, FORWARD rules
// and pid files of every run whose owner is no longer alive. Runs of live
// harnesses are left alone. It returns the run numbers it cleaned.
func CleanupStale(ctx context.Context, prefix string, log *slog.Logger) ([]int, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !prefixRE.MatchString(prefix) {
		return nil, fmt.Errorf("netns: prefix %q: want 1 to 5 letters a-z", prefix)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ids, err := runsPresent(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var cleaned []int
	var errs []error
	for _, id := range ids {
		pidFile := filepath.Join(StateDir, name(prefix, id)+".pid")
		if ownerAlive(pidFile) {
			continue
		}
		log.Info("removing leftovers of an earlier run", "net", name(prefix, id))
		if err := removeRun(ctx, prefix, id, log); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Remove(pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		cleaned = append(cleaned, id)
	}
	return cleaned, errors.Join(errs...)
}

// runsPresent lists the run numbers that have anything on the machine.
func runsPresent(ctx context.Context, prefix string) ([]int, error) {
	q := regexp.QuoteMeta(prefix)
	var ids []int
	add := func(re *regexp.Regexp, names []string) {
		for _, s := range names {
			if m := re.FindStringSubmatch(s); m != nil {
				if id, err := strconv.Atoi(m[1]); err == nil && !slices.Contains(ids, id) {
					ids = append(ids, id)
				}
			}
		}
	}
	pids, _ := filepath.Glob(filepath.Join(StateDir, prefix+"*.pid"))
	for i := range pids {
		pids[i] = filepath.Base(pids[i])
	}
	add(regexp.MustCompile(`^`+q+`(\d+)\.pid$`), pids)
	nss, err := namespaces(ctx)
	if err != nil {
		return nil, err
	}
	add(regexp.MustCompile(`^`+q+`(\d+)-n\d+$`), nss)
	add(regexp.MustCompile(`^`+q+`(\d+)(?:br|v\d+)$`), links())
	rules, err := forwardRules(ctx)
	if err != nil {
		return nil, err
	}
	add(regexp.MustCompile(`--comment "?`+q+`(\d+)"?(?: |$)`), rules)
	slices.Sort(ids)
	return ids, nil
}

// ownerAlive reports whether the pid file names a running process.
func ownerAlive(pidFile string) bool {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	// A killed harness whose parent has not reaped it yet is a zombie:
	// it still has a pid, but owns nothing any more.
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, ok := strings.Cut(string(stat), ") ")
	return !ok || !strings.HasPrefix(rest, "Z")
}

// removeRun deletes everything of run id, trying every step even when
// one fails.
func removeRun(ctx context.Context, prefix string, id int, log *slog.Logger) error {
	tag := name(prefix, id)
	var errs []error
	nss, err := namespaces(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	nsRE := regexp.MustCompile(`^` + regexp.QuoteMeta(tag) + `-n\d+$`)
	for _, ns := range nss {
		if !nsRE.MatchString(ns) {
			continue
		}
		killAll(ctx, ns, log)
		if _, err := run(ctx, "", "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	linkRE := regexp.MustCompile(`^` + regexp.QuoteMeta(tag) + `(?:br|v\d+)$`)
	for _, l := range links() {
		// A veth went away with its namespace's end; only what is left
		// is deleted.
		if linkRE.MatchString(l) && linkExists(l) {
			if _, err := run(ctx, "", "ip", "link", "del", l); err != nil && linkExists(l) {
				errs = append(errs, err)
			}
		}
	}
	rules, err := forwardRules(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	ruleRE := regexp.MustCompile(`--comment "?` + regexp.QuoteMeta(tag) + `"?(?: |$)`)
	for _, r := range rules {
		if !ruleRE.MatchString(r) || !strings.HasPrefix(r, "-A ") {
			continue
		}
		args := append([]string{"iptables", "-D"}, strings.Fields(strings.ReplaceAll(r[3:], `"`, ""))...)
		if _, err := run(ctx, "", args...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killAll SIGKILLs every process in namespace ns and waits a little for
// them to go, so that the namespace can really disappear.
func killAll(ctx context.Context, ns string, log *slog.Logger) {
	out, err := run(ctx, "", "ip", "netns", "pids", ns)
	if err != nil {
		return
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		log.Info("killing leftover process", "ns", ns, "pid", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) {
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func namespaces(ctx context.Context) ([]string, error) {
	out, err := run(ctx, "", "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

func links() []string {
	ents, _ := os.ReadDir("/sys/class/net")
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func forwardRules(ctx context.Context) ([]string, error) {
	out, err := run(ctx, "", "iptables", "-S", "FORWARD")
	if err != nil {
		return nil, err
	}
	var rules []string
	for line := range strings.Lines(out) {
		rules = append(rules, strings.TrimSpace(line))
	}
	return rules, nil
}
