package dataverse_test

import (
	"context"
	"errors"
	"testing"

	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
)

func TestChangeTrackingEnabledAndExpiredToken(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	ctx := context.Background()
	e.sim.SetChangeTracking("lead", false)
	for entity, want := range map[string]bool{"account": true, "lead": false} {
		got, err := e.client.ChangeTrackingEnabled(ctx, entity)
		if err != nil || got != want {
			t.Errorf("ChangeTrackingEnabled(%s) = %v, %v; want %v", entity, got, err, want)
		}
	}
	if _, err := e.client.ChangeTrackingEnabled(ctx, "no'such"); err == nil {
		t.Error("a logical name with a quote accepted")
	}
	e.sim.Create("account", map[string]any{"name": "x"})
	opts := dataverse.ListOptions{Select: []string{"accountid", "name"}, TrackChanges: true}
	p, err := e.client.ListPage(ctx, "account", opts, "")
	if err != nil || p.DeltaLink == "" {
		t.Fatalf("initial read: %v, delta link %q", err, p.DeltaLink)
	}
	e.clk.Advance(dataversesim.DefaultChangeTrackingExpiry + 1)
	_, err = e.client.ListPage(ctx, "account", opts, p.DeltaLink)
	var apiErr *dataverse.APIError
	if !dataverse.IsDeltaTokenRejected(err) || !errors.As(err, &apiErr) || apiErr.Code != dataverse.ExpiredVersionStampCode {
		t.Errorf("expired token: %v; want ExpiredVersionStamp recognised", err)
	}
	if dataverse.IsDeltaTokenRejected(errors.New("dial tcp: refused")) || dataverse.IsDeltaTokenRejected(&dataverse.APIError{Status: 503}) {
		t.Error("a transport error or 503 taken for a rejected token")
	}
}
