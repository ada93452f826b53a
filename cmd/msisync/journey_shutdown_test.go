package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// Issue 14: a stop that times out says what it dropped and fails (exit
// status 1), instead of logging "msisync stopped" and exiting 0.
func TestShutdownThatTimesOutSaysWhatItDroppedAndFails(t *testing.T) {
	dataDir, base := cleanEnv(t)
	t.Setenv("MSISYNC_SHUTDOWN_TIMEOUT", "1s")
	svc := startServe(t, base, "receiver")
	key := webhookKey(t, dataDir)

	// A slow client: the headers and a promise of a body that never comes.
	// Expect: 100-continue makes the server say when the handler starts
	// reading the body, so the request is known to be in progress.
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /webhooks/events?code=%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n", key)
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(line, "100 Continue") {
		t.Fatalf("no 100 Continue from the receiver: %q, %v", line, err)
	}
	if _, err := conn.Write([]byte(`{"entity":`)); err != nil {
		t.Fatal(err)
	}

	svc.cancel()
	svc.cancel = nil
	var got error
	select {
	case got = <-svc.done:
	case <-time.After(pollTimeout):
		t.Fatal("serve did not stop")
	}
	if got == nil || !strings.Contains(got.Error(), "dropped 1 connections") || !strings.Contains(got.Error(), "MSISYNC_SHUTDOWN_TIMEOUT") {
		t.Fatalf("stop with a request in progress returned %v, want an error saying it dropped 1 connection", got)
	}
	if code := (result{err: got}).exitCode(); code != 1 {
		t.Fatalf("exit status %d, want 1", code)
	}
}

// Issue 14: in a data folder that already exists with mode 0755, the
// queue's, store's and sandbox's files are still 0600, and start-up warns
// about the folder.
func TestDataFilesArePrivateAndAnOpenFolderIsReported(t *testing.T) {
	dataDir, base := cleanEnv(t)
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MSISYNC_LOG_LEVEL", "warn")
	logs := captureStderr(t)
	svc := startServe(t, base, "serve")
	key := webhookKey(t, dataDir)
	if code, _, body := post(t, base+"/webhooks/events?code="+key, readExample(t, "demo-1-user.json")); code != http.StatusAccepted {
		t.Fatalf("POST: %d %s", code, body)
	}
	eventually(t, "sales person in the sandbox", func() (bool, string) {
		st := sandboxState(t, base)
		return len(st.SalesPersons) == 1, st.String()
	})
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			continue // a -shm or .tmp file removed meanwhile
		}
		if m := fi.Mode().Perm(); !e.IsDir() && m&0o077 != 0 {
			t.Errorf("%s has mode %v, want 0600", e.Name(), m)
		}
	}
	svc.stop(t)
	if out := logs(); !strings.Contains(out, "data folder is accessible to other users") || !strings.Contains(out, "-rwxr-xr-x") {
		t.Errorf("no start-up warning about the 0755 data folder in the logs:\n%s", tail(out, 2000))
	}
}

// captureStderr points os.Stderr (where the JSON logs go) at a pipe for the
// test and returns what was written so far.
func captureStderr(t *testing.T) func() string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	var buf syncBuffer
	done := make(chan struct{})
	go func() { _, _ = io.Copy(&buf, r); close(done) }()
	t.Cleanup(func() {
		os.Stderr = old
		w.Close()
		<-done
	})
	return func() string { return buf.String() }
}

// Issue 14: zero-config serve listens on loopback only; told to listen on
// every interface with the sandbox on, it warns that the sandbox's records
// are readable there.
func TestSandboxOnAReachableAddressIsReported(t *testing.T) {
	_, base := cleanEnv(t)
	logs := captureStderr(t)
	svc := startServe(t, base, "serve")
	svc.stop(t)
	if out := logs(); strings.Contains(out, "readable without a token") {
		t.Fatalf("warning on the loopback address:\n%s", tail(out, 1000))
	}
	port := base[strings.LastIndex(base, ":")+1:]
	t.Setenv("MSISYNC_ADDR", ":"+port)
	svc = startServe(t, base, "serve")
	svc.stop(t)
	if out := logs(); !strings.Contains(out, "readable without a token") {
		t.Fatalf("no warning with MSISYNC_ADDR=:%s and the sandbox on:\n%s", port, tail(out, 1000))
	}
}
