package report

import (
	"strings"
	"testing"
)

const mountinfo = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
30 22 0:26 / /tmp rw,nosuid - tmpfs tmpfs rw
31 22 254:16 / /mnt/my\040data rw - xfs /dev/vdb rw
32 30 0:27 / /tmp rw - tmpfs overlay-tmp rw
garbage line
`

func TestDiskPicksTheInnermostMount(t *testing.T) {
	for dir, want := range map[string]string{
		"/work/x":             "/dev/vda (ext4 on /)",
		"/tmp/ration-bench-1": "overlay-tmp (tmpfs on /tmp)", // the later mount on /tmp hides the first
		"/tmpfoo":             "/dev/vda (ext4 on /)",
		"/mnt/my data/pg":     "/dev/vdb (xfs on /mnt/my data)",
	} {
		if got := disk(mountinfo, dir); !strings.HasPrefix(got, want) {
			t.Errorf("disk(%q) = %q, want it to start with %q", dir, got, want)
		}
	}
	if got := disk("", "/x"); got != "unknown" {
		t.Errorf("disk without mounts = %q", got)
	}
}

func TestCPUAndMemory(t *testing.T) {
	cpuinfo := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n"
	if got := cpuModel(cpuinfo); got != "AMD EPYC 7B13" {
		t.Errorf("cpuModel = %q", got)
	}
	if got := cpuModel("processor: 0\n"); got != "unknown" {
		t.Errorf("cpuModel without a model = %q", got)
	}
	if got := memTotal("MemFree: 1 kB\nMemTotal:       24576000 kB\n"); got != 24576000*1024 {
		t.Errorf("memTotal = %d", got)
	}
	if got := memTotal("MemTotal: lots\n"); got != 0 {
		t.Errorf("memTotal of garbage = %d", got)
	}
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add(mountinfo)
	f.Add(`1 2 3:4 / /a\0 x - y`)
	f.Fuzz(func(t *testing.T, s string) {
		for _, m := range parseMountinfo(s) {
			if m.devNum == "" || m.point == "" || m.fsType == "" || m.source == "" {
				t.Fatalf("empty field in %+v from %q", m, s)
			}
		}
		_ = disk(s, "/tmp/x")
	})
}
