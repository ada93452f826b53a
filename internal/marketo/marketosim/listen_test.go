package marketosim

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestListenAndServe_ServesUntilContextDoneAndNeverLogsSecret(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var logs bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ListenAndServe(ctx, addr, Options{ClientID: "cid", ClientSecret: "very-secret"},
			slog.New(slog.NewTextHandler(&logs, nil)))
	}()
	q := url.Values{"grant_type": {"client_credentials"}, "client_id": {"cid"}, "client_secret": {"very-secret"}}
	var res *http.Response
	waitFor(t, func() bool {
		res, err = http.Get("http://" + addr + "/identity/oauth/token?" + q.Encode())
		return err == nil
	})
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), "access_token") {
		t.Fatalf("identity over TCP: %s", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if strings.Contains(logs.String(), "very-secret") || !strings.Contains(logs.String(), addr) {
		t.Fatalf("log: %s", logs.String())
	}
	if err := ListenAndServe(context.Background(), "256.0.0.1:bad", Options{}, nil); err == nil || !strings.Contains(err.Error(), "256.0.0.1:bad") {
		t.Fatalf("bad addr: %v", err)
	}
}
