package main

import (
	"bufio"
	"fmt"
	"net"
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
