package sqlitequeue

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/msisync/msisync/internal/queue"
)

// benchBody is the size of a typical reduced change event.
var benchBody = make([]byte, 512)

// benchDir puts benchmark databases on a real disk: set
// MSISYNC_BENCH_DIR when the temp dir is a tmpfs, or fsync costs nothing.
func benchDir(b *testing.B) string {
	if d := os.Getenv("MSISYNC_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "sqlitequeue-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

func openBench(b *testing.B, opts Options) *Queue {
	b.Helper()
	q, err := Open(b.Context(), filepath.Join(benchDir(b), "bench.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { q.Close() })
	return q
}

func reportRate(b *testing.B, msgs int) {
	b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
}

// reportBatching shows group commit at work independently of disk speed.
func reportBatching(b *testing.B, q *Queue, msgs int, commitsBefore int64) {
	if c := q.commits.Load() - commitsBefore; c > 0 {
		b.ReportMetric(float64(msgs)/float64(c), "msgs/commit")
	}
}

// BenchmarkSend is one message per Send from many concurrent callers (as the
// webhook receiver does): group commit folds them into few transactions.
func BenchmarkSend(b *testing.B) {
	for _, window := range []struct {
		name string
		d    time.Duration
	}{{"window=1ms", time.Millisecond}, {"window=off(default)", 0}} {
		b.Run(window.name, func(b *testing.B) {
			q := openBench(b, Options{CommitWindow: window.d})
			var next atomic.Int64
			b.SetParallelism(16) // 16 × GOMAXPROCS concurrent senders
			before := q.commits.Load()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := "m" + strconv.FormatInt(next.Add(1), 10)
					if err := q.Send(b.Context(), queue.Message{ID: id, Body: benchBody}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRate(b, b.N)
			reportBatching(b, q, b.N, before)
		})
	}
}

// BenchmarkSendSerial is one message per Send from one caller: the floor,
// one fsync per message.
func BenchmarkSendSerial(b *testing.B) {
	q := openBench(b, Options{})
	b.ResetTimer()
	for i := range b.N {
		if err := q.Send(b.Context(), queue.Message{ID: "m" + strconv.Itoa(i), Body: benchBody}); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, b.N)
}

// BenchmarkSendBatch is 100 messages per Send from one caller.
func BenchmarkSendBatch(b *testing.B) {
	q := openBench(b, Options{})
	const batch = 100
	msgs := make([]queue.Message, batch)
	b.ResetTimer()
	for i := range b.N {
		for j := range msgs {
			msgs[j] = queue.Message{ID: strconv.Itoa(i) + "-" + strconv.Itoa(j), Body: benchBody}
		}
		if err := q.Send(b.Context(), msgs...); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, b.N*batch)
}

// BenchmarkReceiveComplete receives batches of 100 and completes each
// message, either one after another or from 16 goroutines (as a worker pool
// does, which lets group commit fold the completions).
func BenchmarkReceiveComplete(b *testing.B) {
	for _, mode := range []struct {
		name    string
		workers int
	}{{"serial", 1}, {"workers=16", 16}} {
		b.Run(mode.name, func(b *testing.B) {
			q := openBench(b, Options{})
			ctx := b.Context()
			const batch = 100
			total := b.N * batch
			msgs := make([]queue.Message, 0, 1000)
			for i := range total {
				msgs = append(msgs, queue.Message{ID: strconv.Itoa(i), Body: benchBody})
				if len(msgs) == cap(msgs) || i == total-1 {
					if err := q.Send(ctx, msgs...); err != nil {
						b.Fatal(err)
					}
					msgs = msgs[:0]
				}
			}
			before := q.commits.Load()
			b.ResetTimer()
			done := 0
			for done < total {
				ds, err := q.Receive(ctx, batch, time.Second)
				if err != nil {
					b.Fatal(err)
				}
				if len(ds) == 0 {
					b.Fatalf("queue empty after %d of %d", done, total)
				}
				work := make(chan *queue.Delivery)
				var wg sync.WaitGroup
				for range mode.workers {
					wg.Go(func() {
						for d := range work {
							if err := q.Complete(ctx, d); err != nil {
								b.Error(err)
							}
						}
					})
				}
				for _, d := range ds {
					work <- d
				}
				close(work)
				wg.Wait()
				done += len(ds)
			}
			reportRate(b, total)
			reportBatching(b, q, total, before)
		})
	}
}

// writtenBytes is what this process has passed to write(2) so far (Linux
// /proc/self/io wchar), or -1 where that is not available. WAL frames,
// checkpoints and the database file are all written by this process.
func writtenBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// BenchmarkPipeline is the receiver and the worker on one queue, as `serve`
// runs them: 32 senders each sending one ~3 KB message with a random
// (uuid) id per Send, while one consumer receives batches of 32 and
// completes each message from 16 goroutines. It reports the messages that
// went through per second and the bytes written per message (WAL,
// checkpoints), the write amplification the claim and settle pay.
func BenchmarkPipeline(b *testing.B) {
	q := openBench(b, Options{})
	ctx := b.Context()
	body := make([]byte, 3000)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	total := b.N
	var sent atomic.Int64
	before, wBefore := q.commits.Load(), writtenBytes()
	b.ResetTimer()
	var senders sync.WaitGroup
	for range 32 {
		senders.Go(func() {
			for sent.Add(1) <= int64(total) {
				if err := q.Send(ctx, queue.Message{ID: uuid.NewString(), Body: body,
					Properties: map[string]string{queue.PropEntity: "contact"}}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	done := 0
	for done < total && !b.Failed() {
		ds, err := q.Receive(ctx, 32, time.Second)
		if err != nil {
			b.Fatal(err)
		}
		work := make(chan *queue.Delivery)
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for d := range work {
					if err := q.Complete(ctx, d); err != nil {
						b.Error(err)
					}
				}
			})
		}
		for _, d := range ds {
			work <- d
		}
		close(work)
		wg.Wait()
		done += len(ds)
	}
	senders.Wait()
	b.StopTimer()
	reportRate(b, total)
	reportBatching(b, q, total, before)
	if w := writtenBytes(); w >= 0 && wBefore >= 0 {
		b.ReportMetric(float64(w-wBefore)/float64(total), "wbytes/msg")
	}
}
