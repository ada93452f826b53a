package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/queue/sqlitequeue"
)

// `dlq list` reads the dead-letter queue a page at a time: with pages of
// three, seven dead letters all come out once, in order, and --limit stops
// it early.
func TestDLQListPagesThroughDeadLetters(t *testing.T) {
	dataDir, _ := cleanEnv(t)
	old := dlqPage
	dlqPage = 3
	t.Cleanup(func() { dlqPage = old })
	ctx := context.Background()
	q, err := sqlitequeue.Open(ctx, filepath.Join(dataDir, "queue.db"), sqlitequeue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 7; i++ {
		id := fmt.Sprintf("m%d", i)
		if err := q.Send(ctx, queue.Message{ID: id, Body: []byte(`{}`), Properties: map[string]string{queue.PropEntity: "contact"}}); err != nil {
			t.Fatal(err)
		}
		ds, err := q.Receive(ctx, 1, time.Second)
		if err != nil || len(ds) != 1 {
			t.Fatalf("receive %s: %v %v", id, ds, err)
		}
		if err := q.DeadLetter(ctx, ds[0], "MissingData", "dead letter "+id); err != nil {
			t.Fatal(err)
		}
	}
	q.Close()

	list := func(args ...string) []deadView {
		t.Helper()
		var out []deadView
		s := mustRun(t, append([]string{"dlq", "list", "--json"}, args...)...)
		if err := json.Unmarshal([]byte(s), &out); err != nil {
			t.Fatalf("dlq list --json: %v\n%s", err, s)
		}
		return out
	}
	all := list("--limit", "0")
	var got []string
	for _, d := range all {
		got = append(got, strings.TrimPrefix(d.Description, "dead letter "))
	}
	if strings.Join(got, ",") != "m0,m1,m2,m3,m4,m5,m6" {
		t.Fatalf("dlq list over pages of 3: %v, want m0..m6 once each in order", got)
	}
	if n := len(list("--limit", "5")); n != 5 {
		t.Fatalf("dlq list --limit 5 listed %d", n)
	}
}
