package history

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestRecordAndRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.jsonl")
	r, err := NewRecorder(path)
	if err != nil {
		t.Fatal(err)
	}
	exp, at := int64(5000), int64(2000)
	in := []Op{
		{Client: 1, User: "u", Kind: Grant, ID: "g", Amount: 10, Timestamp: 1000, ExpiresAt: &exp, Priority: 2, Invoke: 1, Return: 2, Outcome: OK, Attempts: 2, Duplicate: true},
		{Client: 2, User: "u", Kind: Deduct, ID: "d", Amount: 20, Timestamp: 1500, Invoke: 3, Return: 4, Outcome: Refused,
			Insufficient: &Insufficient{DeductionID: "d", At: 1500, Shortfall: 10}},
		{Client: 1, User: "u", Kind: Balance, At: &at, ResultAt: &at, Invoke: 5, Return: 6, Outcome: OK, Balance: 10,
			Grants: []GrantBalance{{ID: "g", Remaining: 10, ExpiresAt: &exp, Priority: 2, Timestamp: 1000}}},
		{Client: 3, User: "u", Kind: Grant, ID: "g2", Amount: 1, Timestamp: 1, Invoke: 7, Outcome: Unknown, Error: "timeout"},
	}
	for i, op := range in {
		got := r.Add(op)
		if got.Seq != int64(i+1) {
			t.Fatalf("seq %d, want %d", got.Seq, i+1)
		}
		in[i].Seq = got.Seq
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out, err := Read(f)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, in)
	}
	if !reflect.DeepEqual(r.Ops(), in) {
		t.Fatal("Ops differs from what was added")
	}
	if _, err := Read(strings.NewReader("{\"seq\":1}\nnot json\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad line: err %v", err)
	}
}
