package dataverse_test

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
)

// BenchmarkListPage50k pages through 50,000 contacts from the simulator in
// pages of 5000, as backfill does; it reports rows/s.
func BenchmarkListPage50k(b *testing.B) {
	sim := dataversesim.New(dataversesim.Options{Token: token})
	if _, err := sim.Seed(dataversesim.SeedOptions{Accounts: 1000, Contacts: 50000}); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	defer srv.Close()
	c, err := dataverse.New(dataverse.Config{URL: srv.URL, Token: token})
	if err != nil {
		b.Fatal(err)
	}
	cols := []string{"contactid", "firstname", "lastname", "emailaddress1", "jobtitle", "telephone1", "parentcustomerid", "ownerid", "statecode", "modifiedon"}
	rows := 0
	for b.Loop() {
		next := ""
		for {
			p, err := c.ListPage(context.Background(), "contact", dataverse.ListOptions{Select: cols, PageSize: 5000}, next)
			if err != nil {
				b.Fatal(err)
			}
			rows += len(p.Rows)
			if next = p.NextLink; next == "" {
				break
			}
		}
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkUpdateBatch100 writes 100 contacts in one $batch, the MSI
// write-back's per-cycle shape for 10,000 persons with 1% changed.
func BenchmarkUpdateBatch100(b *testing.B) {
	sim := dataversesim.New(dataversesim.Options{Token: token, RequestsPerWindow: -1})
	res, err := sim.Seed(dataversesim.SeedOptions{Contacts: 100})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	defer srv.Close()
	c, _ := dataverse.New(dataverse.Config{URL: srv.URL, Token: token})
	ops := make([]dataverse.BatchOp, 0, 100)
	for _, id := range res.IDs["contact"] {
		ops = append(ops, dataverse.BatchOp{LogicalName: "contact", ID: id, Fields: map[string]any{"msi_relativescore": 3}})
	}
	for b.Loop() {
		if _, err := c.UpdateBatch(context.Background(), ops); err != nil {
			b.Fatal(err)
		}
	}
}
