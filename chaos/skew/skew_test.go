package skew

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func call(t *testing.T, method, query string) (int, State) {
	t.Helper()
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, httptest.NewRequest(method, Path+query, nil))
	var s State
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil {
			t.Fatalf("%s %s: %v: %s", method, query, err, rec.Body)
		}
	}
	return rec.Code, s
}

func TestHandlerMovesTheClock(t *testing.T) {
	t.Cleanup(func() { Set(0) })
	code, s := call(t, http.MethodPost, "?offset=-1h")
	if code != http.StatusOK || s.Offset != "-1h0m0s" || s.OffsetNS != int64(-time.Hour) {
		t.Fatalf("POST -1h: %d %+v", code, s)
	}
	if got := time.Since(Now()); got < 59*time.Minute || got > 61*time.Minute {
		t.Fatalf("Now is %v behind the real clock, want about 1h", got)
	}
	if code, s = call(t, http.MethodGet, ""); code != http.StatusOK || Offset() != -time.Hour || s.OffsetNS != int64(-time.Hour) {
		t.Fatalf("GET: %d %+v", code, s)
	}
	if code, s = call(t, http.MethodPost, "?offset=0"); code != http.StatusOK || s.OffsetNS != 0 || Offset() != 0 {
		t.Fatalf("POST 0: %d %+v", code, s)
	}
	if d := time.Since(Now()); d < -time.Second || d > time.Second {
		t.Fatalf("Now is %v from the real clock after a reset", d)
	}
}

func TestHandlerRefusesBadOffsets(t *testing.T) {
	t.Cleanup(func() { Set(0) })
	Set(time.Minute)
	for _, q := range []string{"", "?offset=", "?offset=1", "?offset=an-hour"} {
		if code, _ := call(t, http.MethodPost, q); code != http.StatusBadRequest {
			t.Errorf("POST %q: %d, want 400", q, code)
		}
	}
	if code, _ := call(t, http.MethodPut, "?offset=1s"); code != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d, want 405", code)
	}
	if Offset() != time.Minute {
		t.Fatalf("a refused request changed the offset to %v", Offset())
	}
}
