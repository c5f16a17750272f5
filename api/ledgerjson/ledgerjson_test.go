package ledgerjson

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestEventFieldsByKind(t *testing.T) {
	exp := int64(9000)
	for _, tc := range []struct {
		e    Event
		want string
	}{
		{Event{Kind: KindGrant, ID: "g1", Timestamp: 1000, Amount: 10, BalanceAfter: 10},
			`{"kind":"grant","id":"g1","timestamp":1000,"amount":10,"priority":0,"balance_after":10}`},
		{Event{Kind: KindGrant, ID: "g2", Timestamp: 1000, Amount: 5, ExpiresAt: &exp, Priority: -1, BalanceAfter: 15},
			`{"kind":"grant","id":"g2","timestamp":1000,"amount":5,"expires_at":9000,"priority":-1,"balance_after":15}`},
		{Event{Kind: KindDeduction, ID: "d1", Timestamp: 2000, Amount: 7, Allocations: []Allocation{{"g2", 5}, {"g1", 2}}, BalanceAfter: 8},
			`{"kind":"deduction","id":"d1","timestamp":2000,"amount":7,"allocations":[{"grant_id":"g2","amount":5},{"grant_id":"g1","amount":2}],"balance_after":8}`},
		{Event{Kind: KindDeduction, ID: "d2", Timestamp: 2000, BalanceAfter: 8},
			`{"kind":"deduction","id":"d2","timestamp":2000,"amount":0,"allocations":[],"balance_after":8}`},
		// Fields of another kind are never written.
		{Event{Kind: KindExpiration, ID: "g2", Timestamp: 9000, Amount: 3, ExpiresAt: &exp, Priority: 4, Allocations: []Allocation{{"x", 1}}, BalanceAfter: 5},
			`{"kind":"expiration","id":"g2","timestamp":9000,"amount":3,"balance_after":5}`},
	} {
		b, err := json.Marshal(tc.e)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("%s %s:\n got %s\nwant %s", tc.e.Kind, tc.e.ID, b, tc.want)
		}
		var back Event
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		again, _ := json.Marshal(back)
		if string(again) != tc.want {
			t.Errorf("%s %s: read back and written again: %s", tc.e.Kind, tc.e.ID, again)
		}
	}
}

func TestEventRoundTrip(t *testing.T) {
	exp := int64(9000)
	in := []Event{
		{Kind: KindGrant, ID: "g", Timestamp: 1, Amount: 2, ExpiresAt: &exp, Priority: 3, BalanceAfter: 2},
		{Kind: KindDeduction, ID: "d", Timestamp: 2, Amount: 1, Allocations: []Allocation{{"g", 1}}, BalanceAfter: 1},
		{Kind: KindExpiration, ID: "g", Timestamp: 9000, Amount: 1},
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out []Event
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip:\n got %+v\nwant %+v", out, in)
	}
}

func TestBalance(t *testing.T) {
	exp := int64(9000)
	for _, tc := range []struct {
		b    Balance
		want string
	}{
		{Balance{User: "u", At: 5, Balance: 0},
			`{"user":"u","at":5,"balance":0,"grants":[]}`},
		{Balance{User: "u", At: 5, Balance: 3, Grants: []GrantBalance{{ID: "g1", Remaining: 1, Timestamp: 1}, {ID: "g2", Remaining: 2, ExpiresAt: &exp, Priority: 1, Timestamp: 2}}},
			`{"user":"u","at":5,"balance":3,"grants":[{"id":"g1","remaining":1,"expires_at":null,"priority":0,"timestamp":1},{"id":"g2","remaining":2,"expires_at":9000,"priority":1,"timestamp":2}]}`},
	} {
		b, err := json.Marshal(tc.b)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("got  %s\nwant %s", b, tc.want)
		}
	}
}
