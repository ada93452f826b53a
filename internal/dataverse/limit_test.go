package dataverse_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/msisync/msisync/internal/dataverse"
)

// A response over the cap is an error naming the cap (the client reads no
// further than the cap, so a runaway body cannot fill the worker's memory).
func TestResponseOverTheCapIsAnError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"contactid":"` + strings.Repeat("x", 100) + `","value":"`))
		chunk := []byte(strings.Repeat("y", 4096))
		for i := 0; i < 4096; i++ { // up to 16 MiB, unless the client stops reading
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	c, err := dataverse.New(dataverse.Config{URL: srv.URL, Token: "t", MaxResponseBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Read(context.Background(), "contact", "00000000-0000-4000-8000-000000000001", []string{"fullname"})
	if err == nil || !strings.Contains(err.Error(), "response over 65536 bytes") {
		t.Fatalf("err %v, want the response cap error", err)
	}
	// A good answer under the cap still works.
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"contactid":"00000000-0000-4000-8000-000000000001","fullname":"Ada"}`))
	}))
	t.Cleanup(ok.Close)
	c, err = dataverse.New(dataverse.Config{URL: ok.URL, Token: "t", MaxResponseBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := c.Read(context.Background(), "contact", "00000000-0000-4000-8000-000000000001", []string{"fullname"})
	if err != nil || attrs["fullname"].Text() != "Ada" {
		t.Fatalf("read under the cap: %v %v", attrs, err)
	}
}
