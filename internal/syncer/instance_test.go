package syncer_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/syncer"
	"github.com/msisync/msisync/internal/syncer/mapping"
)

// The start-up check describes every object the worker writes: with the
// default mapping a standard MSI instance (the simulator's schema) passes;
// fields mapped onto companies, opportunities and roles that the instance
// lacks are all named, each with the mapping setting that removes it.
func TestCheckInstanceNamesEveryMissingMappedField(t *testing.T) {
	k := newStack(t, marketosim.Options{}, nil)
	if err := k.s.CheckInstance(context.Background(), k.mk); err != nil {
		t.Fatalf("default mapping on a standard instance: %v", err)
	}
	m, err := mapping.Parse([]byte(`
entities:
  account:
    fields:
      - {column: new_tier, field: tier}
  opportunity:
    fields:
      - {column: new_forecast, field: forecastCategory}
  connection:
    fields:
      - {column: description, field: roleNotes}
  contact:
    fields:
      - {column: new_segment, field: segment}
`))
	if err != nil {
		t.Fatal(err)
	}
	k2 := newStack(t, marketosim.Options{}, func(c *syncer.Config) { c.Mapping = m })
	err = k2.s.CheckInstance(context.Background(), k2.mk)
	var ie *syncer.InstanceError
	if !errors.As(err, &ie) {
		t.Fatalf("err %v, want an *InstanceError", err)
	}
	got := map[string]string{}
	for _, f := range ie.Missing {
		got[string(f.Object)+"."+f.Field] = f.Column
	}
	want := map[string]string{"companies.tier": "account.new_tier", "opportunities.forecastCategory": "opportunity.new_forecast",
		"opportunities/roles.roleNotes": "connection.description", "leads.segment": "contact.new_segment"}
	for k, col := range want {
		if got[k] != col {
			t.Errorf("missing %s: got column %q, want %q (all: %v)", k, got[k], col, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("missing fields %v, want exactly %v", got, want)
	}
	msg := err.Error()
	for _, s := range []string{"MSISYNC_MAPPING", "{account: {fields: [{column: new_tier, field: \"\"}]}}", "roleNotes"} {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not mention %q", msg, s)
		}
	}
}
