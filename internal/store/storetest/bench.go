package storetest

import (
	"fmt"
	"testing"

	"github.com/msisync/msisync/internal/store"
)

// BatchSize is the benchmark batch: one Marketo call's worth of records.
const BatchSize = 300

// benchPool is how many distinct ids the benchmarks cycle through, so later
// iterations are updates of existing rows rather than only inserts.
const benchPool = 30000

func benchLinks(from int) []store.Link {
	links := make([]store.Link, BatchSize)
	for j := range links {
		n := (from + j) % benchPool
		links[j] = store.Link{Kind: store.KindPerson, ExternalID: fmt.Sprintf("%08x-0000-4000-8000-000000000000", n),
			MarketoID: fmt.Sprint(1000000 + n), Entity: "contact", Email: fmt.Sprintf("person%d@example.com", n)}
	}
	return links
}

// BenchmarkPutLinks upserts BatchSize links per op into s.
func BenchmarkPutLinks(b *testing.B, s store.Store) {
	ctx := b.Context()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := s.PutLinks(ctx, benchLinks(i*BatchSize)); err != nil {
			b.Fatalf("PutLinks: %v", err)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i*BatchSize), "ns/link")
}

// BenchmarkGetLinks reads BatchSize links per op from s, all present.
func BenchmarkGetLinks(b *testing.B, s store.Store) {
	ctx := b.Context()
	for from := 0; from < benchPool; from += BatchSize {
		if err := s.PutLinks(ctx, benchLinks(from)); err != nil {
			b.Fatalf("PutLinks: %v", err)
		}
	}
	batches := make([][]string, benchPool/BatchSize)
	for i := range batches {
		for _, l := range benchLinks(i * BatchSize) {
			batches[i] = append(batches[i], l.ExternalID)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		got, err := s.GetLinks(ctx, store.KindPerson, batches[i%len(batches)])
		if err != nil {
			b.Fatalf("GetLinks: %v", err)
		}
		if len(got) != BatchSize {
			b.Fatalf("GetLinks returned %d links, want %d", len(got), BatchSize)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i*BatchSize), "ns/link")
}
