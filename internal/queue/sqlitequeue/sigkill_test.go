package sqlitequeue

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/queue"
)

// childEnv switches the test binary into the sending child of
// TestSIGKILLLosesNoAcknowledgedMessage; its value is the database path.
const childEnv = "MSISYNC_SQLITEQUEUE_SIGKILL_CHILD"

// TestSIGKILLChild is not a test on its own: run by the parent below, it
// sends messages from several goroutines and prints "ack <id>" for each Send
// that returned, until it is killed.
func TestSIGKILLChild(t *testing.T) {
	path := os.Getenv(childEnv)
	if path == "" {
		t.Skip("runs only as the child of TestSIGKILLLosesNoAcknowledgedMessage")
	}
	q, err := Open(context.Background(), path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // never outlive a lost parent for long
	defer cancel()
	var (
		next atomic.Int64
		out  sync.Mutex
		wg   sync.WaitGroup
	)
	w := bufio.NewWriter(os.Stdout)
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				id := strconv.FormatInt(next.Add(1), 10)
				if err := q.Send(ctx, queue.Message{ID: id, Body: []byte("payload " + id)}); err != nil {
					fmt.Fprintln(os.Stderr, "send:", err)
					return
				}
				// Printed only after Send returned: the parent counts these.
				out.Lock()
				fmt.Fprintf(w, "ack %s\n", id)
				w.Flush()
				out.Unlock()
			}
		})
	}
	wg.Wait()
	os.Exit(3) // the parent should have killed us
}

func TestSIGKILLLosesNoAcknowledgedMessage(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("inside the child")
	}
	const killAfter = 400
	path := filepath.Join(t.TempDir(), "kill.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestSIGKILLChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		id, ok := strings.CutPrefix(sc.Text(), "ack ")
		if !ok {
			continue
		}
		acked[id] = true
		if len(acked) == killAfter && !killed {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL: no deferred code, no flush
				t.Fatalf("kill child: %v", err)
			}
			killed = true
		}
		// Acks already in the pipe were acknowledged before the kill: keep reading.
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child exited after %d acks without being killed: %v\n%s", len(acked), err, stderr.String())
	}
	t.Logf("child killed after %d acknowledged sends (%v)", len(acked), err)

	q := openTest(t, path, Options{})
	stored := map[string]bool{}
	for {
		ds, err := q.Receive(t.Context(), 1000, 0)
		if err != nil {
			t.Fatalf("Receive after reopen: %v", err)
		}
		if len(ds) == 0 {
			break
		}
		for _, d := range ds {
			if string(d.Body) != "payload "+d.ID {
				t.Errorf("message %s has body %q", d.ID, d.Body)
			}
			stored[d.ID] = true
		}
	}
	lost := 0
	for id := range acked {
		if !stored[id] {
			lost++
			if lost <= 10 {
				t.Errorf("acknowledged message %s lost", id)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged messages lost", lost, len(acked))
	}
	t.Logf("all %d acknowledged messages survived; %d stored in total", len(acked), len(stored))
}
