package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("# HELP ration_actor_activations_total x\n# TYPE ration_actor_activations_total counter\n" +
			"ration_actor_activations_total 42\nration_actor_activations_total_other 7\n" +
			"ration_actor_passivations_total 1.5e+01\nration_reloads_total{reason=\"x\"} 3\n"))
	}))
	defer srv.Close()
	m, err := scrape(t.Context(), srv.URL, "ration_actor_activations_total", "ration_actor_passivations_total", "ration_reloads_total")
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m["ration_actor_activations_total"] != 42 || m["ration_actor_passivations_total"] != 15 {
		t.Fatalf("scraped %v", m)
	}
	if _, err := scrape(t.Context(), srv.URL+"/nope\x7f", "x"); err == nil {
		t.Fatal("a bad URL scraped")
	}
}
