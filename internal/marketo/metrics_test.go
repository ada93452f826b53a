package marketo

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/marketo/marketotype"
)

func TestMetrics_CallsByEndpointAndCodeSharedAcrossClients(t *testing.T) {
	e := newEnv(t, marketosim.Options{})
	reg := prometheus.NewRegistry()
	c1 := e.client(func(cfg *Config) { cfg.Registerer = reg })
	c2 := e.client(func(cfg *Config) { cfg.Registerer = reg }) // same registry: no error, shared series
	e.sim.FailNext("606")
	if _, err := c1.Describe(context.Background(), marketotype.Companies); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{Input: leads(3, "m")}); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP msisync_marketo_calls_total Marketo REST calls by endpoint and response code.
# TYPE msisync_marketo_calls_total counter
msisync_marketo_calls_total{code="606",endpoint="describe companies"} 1
msisync_marketo_calls_total{code="ok",endpoint="describe companies"} 1
msisync_marketo_calls_total{code="ok",endpoint="sync leads"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "msisync_marketo_calls_total"); err != nil {
		t.Fatal(err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), testSecret) {
					t.Fatalf("secret in metric label %s", mf.GetName())
				}
			}
		}
	}
}
