package sqlitequeue

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/queue"
)

// TestCheckpointsOffTheCommitPath: checkpoints run besides the commits (the
// writer's automatic one would only start at 10,000 pages, ~40 MB, far
// beyond these 16 MB of sends). The WAL size is logged, not asserted: it
// depends on whether a checkpoint happened to complete between commits.
func TestCheckpointsOffTheCommitPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	q := openTest(t, path, Options{})
	body := make([]byte, 8<<10)
	const senders, each = 8, 250
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := q.Send(t.Context(), queue.Message{ID: fmt.Sprintf("m-%d-%d", s, i), Body: body}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// The background checkpointer was woken at least twice (2000/1000); wait
	// (bounded) for its first run to be counted.
	deadline := time.Now().Add(10 * time.Second)
	for q.checkpointRuns() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if q.checkpointRuns() == 0 {
		t.Fatal("no checkpoint ran besides the commits")
	}
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("WAL %d bytes, %d checkpoints, %d commits for %d sends", fi.Size(), q.checkpointRuns(), q.commits.Load(), senders*each)
}
