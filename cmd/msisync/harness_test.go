package main

// Test harness for the journey tests: runs the real cobra commands in
// process with settings from the environment, like a user's shell would.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/config"
)

// pollTimeout bounds every wait for an observable condition.
const pollTimeout = 30 * time.Second

// cleanEnv unsets every msisync setting (a developer's shell may have some)
// and points the data folder and listen address at test-owned places.
// It returns the data folder and the base URL of the service.
func cleanEnv(t *testing.T) (dataDir, baseURL string) {
	t.Helper()
	for _, s := range config.Settings {
		t.Setenv(s.Name, "")
	}
	dataDir = filepath.Join(t.TempDir(), "msisync-data")
	addr := freeAddr(t)
	t.Setenv("MSISYNC_DATA_DIR", dataDir)
	t.Setenv("MSISYNC_ADDR", addr)
	t.Setenv("MSISYNC_LOG_LEVEL", "warn")
	return dataDir, "http://" + addr
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// result is what a finished command left behind.
type result struct {
	stdout, stderr string
	err            error
}

// exitCode is the status main would exit with.
func (r result) exitCode() int { return exitCode(io.Discard, r.err) }

// run executes one msisync command to completion.
func run(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(ctx)
	return result{stdout: out.String(), stderr: errOut.String(), err: err}
}

// mustRun runs a command that must succeed.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	r := run(t, args...)
	if r.err != nil {
		t.Fatalf("msisync %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

// service is a running `msisync serve` (or receiver/worker).
type service struct {
	base   string
	cancel context.CancelFunc
	done   chan error
	stderr *syncBuffer // what the command wrote to its stderr (not the JSON logs)
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startServe starts a long-running command and waits until /healthz answers.
// Cleanup stops it and checks that it shut down cleanly.
func startServe(t *testing.T, base string, args ...string) *service {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &service{base: base, cancel: cancel, done: make(chan error, 1), stderr: &syncBuffer{}}
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(io.Discard)
	root.SetErr(s.stderr)
	go func() { s.done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() { s.stop(t) })
	deadline := time.Now().Add(pollTimeout)
	for {
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("msisync %s exited during start-up: %v", strings.Join(args, " "), err)
		default:
		}
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("msisync %s: /healthz not up after %s", strings.Join(args, " "), pollTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop cancels the service and waits for it to return (idempotent).
func (s *service) stop(t *testing.T) {
	t.Helper()
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("serve returned %v after cancel, want nil (clean shutdown)", err)
		}
	case <-time.After(pollTimeout):
		t.Errorf("serve did not stop within %s of cancel", pollTimeout)
	}
}

// eventually polls cond until it holds, failing after pollTimeout with the
// last state cond described.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	eventuallyWithin(t, pollTimeout, what, cond)
}

// eventuallyWithin is eventually with another bound, for long drains.
func eventuallyWithin(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached after %s; last state:\n%s", what, timeout, last)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// post sends a JSON body and returns the status and body.
func post(t *testing.T, url string, body []byte, header ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func readExample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "api", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// webhookKey reads the key serve generated in the data folder.
func webhookKey(t *testing.T, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, config.KeyFile))
	if err != nil {
		t.Fatalf("webhook key file: %v", err)
	}
	k := strings.TrimSpace(string(b))
	if len(k) < 16 {
		t.Fatalf("webhook key %q is shorter than 16 characters", k)
	}
	return k
}

// marketoState is the Marketo simulator's Dump as JSON (sandbox endpoint or
// marketosim.State marshalled).
type marketoState struct {
	SalesPersons, Companies, Leads, Opportunities, Roles []map[string]any
}

func sandboxState(t *testing.T, base string) marketoState {
	t.Helper()
	code, body := get(t, base+"/sandbox/marketo/state")
	if code != http.StatusOK {
		t.Fatalf("GET /sandbox/marketo/state: %d %s", code, body)
	}
	var st marketoState
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("sandbox state: %v\n%s", err, body)
	}
	return st
}

// find returns the record whose field equals value (case-insensitively).
func find(recs []map[string]any, field, value string) map[string]any {
	for _, r := range recs {
		if v, ok := r[field].(string); ok && strings.EqualFold(v, value) {
			return r
		}
	}
	return nil
}

func (s marketoState) String() string {
	b, _ := json.MarshalIndent(s, "", "  ")
	return string(b)
}

// str reads a string field ("" when absent).
func str(rec map[string]any, field string) string {
	if rec == nil {
		return ""
	}
	s, _ := rec[field].(string)
	return s
}

func summary(format string, args ...any) string { return fmt.Sprintf(format, args...) }
