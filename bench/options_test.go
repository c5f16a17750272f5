package main

import (
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/ration/ration/bench/report"
)

func TestParseOptionsDefaults(t *testing.T) {
	o, err := parseOptions(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.layouts, []string{"shared", "bolt"}) || !slices.Equal(o.nodes, []int{1, 3}) ||
		!slices.Equal(o.sweep, []int{1, 8, 64, 256}) || o.clients != 64 || o.batch != 64 || o.users != 1000 ||
		o.duration != 10*time.Second || o.warmup != 3*time.Second || !o.install || o.quick {
		t.Errorf("defaults: %+v", o)
	}
}

func TestParseOptionsLists(t *testing.T) {
	o, err := parseOptions([]string{"-layouts", " bolt,default,bolt", "-sweep", "256, 1,8,1", "-systems", "etcd", "-nodes", "3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.layouts, []string{"bolt", "default"}) || !slices.Equal(o.sweep, []int{1, 8, 256}) ||
		!slices.Equal(o.systems, []string{"etcd"}) || !slices.Equal(o.nodes, []int{3}) {
		t.Errorf("got %+v", o)
	}
}

func TestParseOptionsRefuses(t *testing.T) {
	for _, args := range [][]string{
		{"-layouts", "lsm"}, {"-layouts", ","}, {"-systems", "mysql"}, {"-sweep", "0"}, {"-sweep", "x"},
		{"-nodes", "9"}, {"-clients", "0"}, {"-batch", "1001"}, {"-users", "0"}, {"-duration", "0s"},
		{"-warmup", "-1s"}, {"-from", "r.json"}, {"extra"}, {"-nope"},
	} {
		if _, err := parseOptions(args, io.Discard); !errors.Is(err, errUsage) {
			t.Errorf("%v: err %v, want a usage error", args, err)
		}
	}
}

func FuzzParseCounts(f *testing.F) {
	f.Add("1,8,64,256")
	f.Add(" 3, 3,,1")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseCounts(s, 1, 4096)
		if err != nil {
			return
		}
		if len(got) == 0 || !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Fatalf("parseCounts(%q) = %v", s, got)
		}
		for _, n := range got {
			if n < 1 || n > 4096 {
				t.Fatalf("parseCounts(%q) = %v: %d out of range", s, got, n)
			}
		}
	})
}

func TestQuickPlan(t *testing.T) {
	o, err := parseOptions([]string{"-quick", "-layouts", "shared"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	p := plan(o)
	if len(p) != 2 || p[0].system != report.Ration || p[0].nodes != 3 || p[0].layout != "shared" ||
		p[1].system != report.Etcd || p[1].nodes != 3 {
		t.Fatalf("quick plan: %+v", p)
	}
	want := []rowSpec{{report.LoadWrite, 64}, {report.LoadBatch, 64}, {report.LoadRead, 64}, {report.LoadStale, 64}}
	if !slices.Equal(p[0].rows, want) {
		t.Errorf("ration rows %v, want %v", p[0].rows, want)
	}
	want = []rowSpec{{report.LoadWrite, 64}, {report.LoadCAS, 64}, {report.LoadRead, 64}}
	if !slices.Equal(p[1].rows, want) {
		t.Errorf("etcd rows %v, want %v", p[1].rows, want)
	}
}

func TestFullPlan(t *testing.T) {
	o, err := parseOptions(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range plan(o) {
		names = append(names, describe(c))
		rs := c.rows
		if last := rs[len(rs)-1]; last != (rowSpec{report.LoadOpen, 256}) {
			t.Errorf("%s: last row %v, want the open loop with 256 workers", describe(c), last)
		}
		if rs[0] != (rowSpec{report.LoadWrite, 64}) {
			t.Errorf("%s: first row %v, want writes at 64 clients", describe(c), rs[0])
		}
		var sweep []int
		for _, r := range rs {
			if r.load == report.LoadWrite {
				sweep = append(sweep, r.clients)
			}
			if r.load == report.LoadStale && c.nodes == 1 {
				t.Errorf("%s: stale reads on one node", describe(c))
			}
		}
		if slices.Sort(sweep); !slices.Equal(sweep, []int{1, 8, 64, 256}) {
			t.Errorf("%s: write sweep %v", describe(c), sweep)
		}
	}
	want := []string{
		"ration 1 node shared", "ration 1 node bolt", "etcd 1 member", "postgres",
		"ration 3 nodes shared", "ration 3 nodes bolt", "etcd 3 members",
	}
	if !slices.Equal(names, want) {
		t.Errorf("configurations %v, want %v", names, want)
	}
}
