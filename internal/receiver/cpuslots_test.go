package receiver

import (
	"context"
	"testing"
)

func TestCPUSlots(t *testing.T) {
	c := make(cpuSlots, 1)
	slot := c.acquire(context.Background())
	if len(c) != 1 {
		t.Fatalf("slots in use = %d after acquire, want 1", len(c))
	}
	// Full: a request whose context ends runs without a slot rather than hang.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	none := c.acquire(ctx)
	none.release()
	if len(c) != 1 {
		t.Fatalf("slots in use = %d after a cancelled acquire, want 1", len(c))
	}
	slot.release()
	slot.release() // the handler releases before Send and again when it returns
	if len(c) != 0 {
		t.Fatalf("slots in use = %d after release, want 0", len(c))
	}
	got := make(chan struct{})
	go func() { c.acquire(context.Background()); close(got) }()
	<-got // the freed slot is available again
	if len(c) != 1 {
		t.Fatalf("slots in use = %d, want 1", len(c))
	}
}
