package report

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Machine describes the host a run was made on.
type Machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
	MemBytes int64  `json:"mem_bytes"`
	Kernel   string `json:"kernel"`
	// Disk is where the systems' data directories were: device, file
	// system, and whether the kernel calls it rotational.
	Disk string `json:"disk"`
}

func (m Machine) String() string {
	return fmt.Sprintf("%d CPUs (%s), %.1f GiB memory, Linux %s, disk %s",
		m.CPUs, m.CPUModel, float64(m.MemBytes)/(1<<30), m.Kernel, m.Disk)
}

// DescribeMachine reads /proc and /sys for the host's figures; dataDir is
// where the systems keep their data. What cannot be read is "unknown".
func DescribeMachine(dataDir string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), CPUModel: "unknown", Kernel: "unknown", Disk: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuModel(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemBytes = memTotal(string(b))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		if dir, err := filepath.EvalSymlinks(dataDir); err == nil {
			m.Disk = disk(string(b), dir)
		}
	}
	return m
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel(cpuinfo string) string {
	for line := range strings.Lines(cpuinfo) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// memTotal is MemTotal of /proc/meminfo in bytes, 0 if absent.
func memTotal(meminfo string) int64 {
	for line := range strings.Lines(meminfo) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}

// mount is one line of /proc/self/mountinfo, the fields the report uses.
type mount struct {
	devNum, point, fsType, source string
}

// parseMountinfo reads the mounts, skipping malformed lines: the fields
// before " - " are id, parent, major:minor, root, mount point, options,
// optional tags; after it come the file system type and source.
func parseMountinfo(mountinfo string) []mount {
	var ms []mount
	for line := range strings.Lines(mountinfo) {
		pre, post, ok := strings.Cut(strings.TrimSpace(line), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 2 {
			continue
		}
		ms = append(ms, mount{devNum: a[2], point: unescape(a[4]), fsType: b[0], source: b[1]})
	}
	return ms
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// within reports whether path is point or below it.
func within(path, point string) bool {
	return point == "/" || path == point || strings.HasPrefix(path, strings.TrimSuffix(point, "/")+"/")
}

// disk describes the file system holding dir: the last mount (mounts
// stack) with the longest mount point that contains it.
func disk(mountinfo, dir string) string {
	var best *mount
	ms := parseMountinfo(mountinfo)
	for i := range ms {
		if within(dir, ms[i].point) && (best == nil || len(ms[i].point) >= len(best.point)) {
			best = &ms[i]
		}
	}
	if best == nil {
		return "unknown"
	}
	s := fmt.Sprintf("%s (%s on %s)", best.source, best.fsType, best.point)
	if rot, err := os.ReadFile("/sys/dev/block/" + best.devNum + "/queue/rotational"); err == nil {
		s += ", rotational " + strings.TrimSpace(string(rot))
	}
	return s
}
