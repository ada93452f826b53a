package sqlitequeue

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/queue"
)

// peerEnv switches the test binary into the peer process of
// TestTwoProcessesShareFile; its value is the database path.
const peerEnv = "MSISYNC_SQLITEQUEUE_PEER"

const peerMessages = 150 // each process sends this many

// TestPeerProcess is not a test on its own: run by TestTwoProcessesShareFile
// it sends its share of messages, then receives and completes messages,
// printing "done <id>" after each Complete, until its stdin closes.
func TestPeerProcess(t *testing.T) {
	path := os.Getenv(peerEnv)
	if path == "" {
		t.Skip("runs only as the peer of TestTwoProcessesShareFile")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() { // the parent closes stdin when every message is accounted for
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	if err := sendAndConsume(ctx, path, "child", os.Stdout); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Exit(0)
}

// sendAndConsume is one process' part: send peerMessages messages, then
// receive and complete until ctx ends, writing "done <id>" per completion.
func sendAndConsume(ctx context.Context, path, name string, out io.Writer) error {
	q, err := Open(ctx, path, Options{PollInterval: 5 * time.Millisecond, BusyTimeout: 30 * time.Second})
	if err != nil {
		return err
	}
	defer q.Close()
	for i := range peerMessages {
		id := name + "-" + strconv.Itoa(i)
		if err := q.Send(ctx, queue.Message{ID: id, Body: []byte(id)}); err != nil {
			return fmt.Errorf("%s: send %s: %w", name, id, err)
		}
	}
	w := bufio.NewWriter(out)
	for ctx.Err() == nil {
		ds, err := q.Receive(ctx, 10, 50*time.Millisecond)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: receive: %w", name, err)
		}
		for _, d := range ds {
			if err := q.Complete(ctx, d); err != nil {
				return fmt.Errorf("%s: complete %s: %w", name, d.ID, err)
			}
			fmt.Fprintf(w, "done %s\n", d.ID)
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// TestTwoProcessesShareFile runs a receiver and a worker as real separate
// processes on one database file: both send and both consume at once, and
// every message is completed exactly once.
func TestTwoProcessesShareFile(t *testing.T) {
	if os.Getenv(peerEnv) != "" {
		t.Skip("inside the peer")
	}
	path := filepath.Join(t.TempDir(), "shared.db")
	// Create the schema first so both processes start from an existing file.
	q0 := openTest(t, path, Options{})
	if err := q0.Close(); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestPeerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), peerEnv+"="+path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	childOut, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	parentR, parentW := io.Pipe()
	parentErr := make(chan error, 1)
	go func() {
		err := sendAndConsume(ctx, path, "parent", parentW)
		parentW.Close()
		parentErr <- err
	}()

	type done struct{ who, id string }
	lines := make(chan done)
	childGone := make(chan struct{}) // the child's stdout ended
	var readers sync.WaitGroup
	for who, r := range map[string]io.Reader{"child": childOut, "parent": parentR} {
		readers.Go(func() {
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				if id, ok := strings.CutPrefix(sc.Text(), "done "); ok {
					lines <- done{who, id}
				}
			}
			if who == "child" {
				close(childGone)
			}
		})
	}

	completed := map[string][]string{}
	per := map[string]int{}
	timeout := time.After(30 * time.Second)
	for len(completed) < 2*peerMessages {
		select {
		case l := <-lines:
			completed[l.id] = append(completed[l.id], l.who)
			per[l.who]++
		case <-childGone:
			err := cmd.Wait() // its stdout is fully read, so Wait may run
			t.Fatalf("peer process ended early (%v) after %d of %d completions:\n%s", err, len(completed), 2*peerMessages, stderr.String())
		case <-timeout:
			t.Fatalf("completed %d of %d messages; child stderr:\n%s", len(completed), 2*peerMessages, stderr.String())
		}
	}
	cancel()
	stdin.Close()
	go func() { // drain until both writers are gone, catching late duplicates
		readers.Wait()
		close(lines)
	}()
	for l := range lines {
		completed[l.id] = append(completed[l.id], l.who)
		per[l.who]++
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("peer process: %v\n%s", err, stderr.String())
	}
	if err := <-parentErr; err != nil {
		t.Fatalf("parent: %v", err)
	}
	for _, who := range []string{"child", "parent"} {
		for i := range peerMessages {
			id := who + "-" + strconv.Itoa(i)
			if got := completed[id]; len(got) != 1 {
				t.Errorf("message %s completed by %v, want exactly once", id, got)
			}
		}
	}
	if len(completed) != 2*peerMessages {
		t.Errorf("completed %d distinct messages, want %d", len(completed), 2*peerMessages)
	}
	t.Logf("completions per process: %v", per)
}
