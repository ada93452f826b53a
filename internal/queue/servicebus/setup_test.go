package servicebus

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin"
)

// fakeAdmin keeps queue properties in memory, as the admin API returns them.
type fakeAdmin struct {
	queues  map[string]admin.QueueProperties
	creates int
	updates []admin.QueueProperties
	getErr  error
}

func (f *fakeAdmin) GetQueue(ctx context.Context, name string, _ *admin.GetQueueOptions) (*admin.GetQueueResponse, error) {
	if f.getErr != nil {
		return nil, f.getErr
	}
	p, ok := f.queues[name]
	if !ok {
		return nil, nil // the SDK's "does not exist"
	}
	return &admin.GetQueueResponse{QueueName: name, QueueProperties: p}, nil
}

func (f *fakeAdmin) CreateQueue(ctx context.Context, name string, o *admin.CreateQueueOptions) (admin.CreateQueueResponse, error) {
	if _, ok := f.queues[name]; ok {
		return admin.CreateQueueResponse{}, errors.New("409 conflict")
	}
	f.creates++
	f.queues[name] = *o.Properties
	return admin.CreateQueueResponse{QueueName: name, QueueProperties: *o.Properties}, nil
}

func (f *fakeAdmin) UpdateQueue(ctx context.Context, name string, p admin.QueueProperties, _ *admin.UpdateQueueOptions) (admin.UpdateQueueResponse, error) {
	if _, ok := f.queues[name]; !ok {
		return admin.UpdateQueueResponse{}, errors.New("404")
	}
	f.updates = append(f.updates, p)
	f.queues[name] = p
	return admin.UpdateQueueResponse{QueueName: name, QueueProperties: p}, nil
}

// existing is a queue as the service reports one made with portal defaults.
func existing() admin.QueueProperties {
	return admin.QueueProperties{
		LockDuration:                        ptr("PT30S"),
		MaxDeliveryCount:                    ptr(int32(10)),
		RequiresDuplicateDetection:          ptr(true),
		DuplicateDetectionHistoryTimeWindow: ptr("PT10M"),
		DeadLetteringOnMessageExpiration:    ptr(false),
		DefaultMessageTimeToLive:            ptr("P10675199DT2H48M5.4775807S"),
		MaxSizeInMegabytes:                  ptr(int32(1024)),
		UserMetadata:                        ptr("keep me"),
	}
}

func TestSetupCreatesMissingQueue(t *testing.T) {
	f := &fakeAdmin{queues: map[string]admin.QueueProperties{}}
	plan, err := setupWith(t.Context(), f, "msisync", DefaultQueueSettings(), false)
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Create || !plan.Applied || f.creates != 1 {
		t.Fatalf("plan %+v, creates %d", plan, f.creates)
	}
	p := f.queues["msisync"]
	checks := map[string][2]string{
		"LockDuration":  {deref(p.LockDuration), "PT1M"},
		"DupWindow":     {deref(p.DuplicateDetectionHistoryTimeWindow), "PT10M"},
		"TTL":           {deref(p.DefaultMessageTimeToLive), "P14D"},
		"MaxDelivery":   {strings.Repeat("x", int(*p.MaxDeliveryCount)), strings.Repeat("x", 10)},
		"RequiresDup":   {boolText(p.RequiresDuplicateDetection), "true"},
		"DeadLetterExp": {boolText(p.DeadLetteringOnMessageExpiration), "true"},
	}
	for name, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %q, want %q", name, c[0], c[1])
		}
	}
	if s := plan.String(); !strings.Contains(s, `created queue "msisync"`) || !strings.Contains(s, "14d") {
		t.Errorf("plan text:\n%s", s)
	}
	// Running it again finds nothing to do.
	plan, err = setupWith(t.Context(), f, "msisync", DefaultQueueSettings(), false)
	if err != nil || plan.Applied || len(plan.Changes) != 0 || len(f.updates) != 0 {
		t.Fatalf("second run: %+v, %v, updates %d", plan, err, len(f.updates))
	}
	if !strings.Contains(plan.String(), "up to date") {
		t.Errorf("plan text: %s", plan)
	}
}

func boolText(b *bool) string {
	if b == nil {
		return "<nil>"
	}
	if *b {
		return "true"
	}
	return "false"
}

func TestSetupUpdatesOnlyChangedFields(t *testing.T) {
	f := &fakeAdmin{queues: map[string]admin.QueueProperties{"msisync": existing()}}
	plan, err := setupWith(t.Context(), f, "msisync", DefaultQueueSettings(), false)
	if err != nil {
		t.Fatal(err)
	}
	var fields []string
	for _, c := range plan.Changes {
		fields = append(fields, c.Field+":"+c.From+"->"+c.To)
	}
	want := []string{
		"LockDuration:30s->1m0s",
		"DeadLetteringOnExpiration:false->true",
		"DefaultMessageTimeToLive:unlimited->14d",
	}
	if strings.Join(fields, ",") != strings.Join(want, ",") {
		t.Errorf("changes %v, want %v", fields, want)
	}
	if len(f.updates) != 1 || !plan.Applied {
		t.Fatalf("updates %d applied %v", len(f.updates), plan.Applied)
	}
	u := f.updates[0]
	if deref(u.LockDuration) != "PT1M" || deref(u.DefaultMessageTimeToLive) != "P14D" || !*u.DeadLetteringOnMessageExpiration {
		t.Errorf("update sent %q %q %v", deref(u.LockDuration), deref(u.DefaultMessageTimeToLive), *u.DeadLetteringOnMessageExpiration)
	}
	// Unrelated properties go back unchanged (the update replaces the whole set).
	if deref(u.UserMetadata) != "keep me" || *u.MaxSizeInMegabytes != 1024 || deref(u.DuplicateDetectionHistoryTimeWindow) != "PT10M" {
		t.Errorf("update changed unrelated properties: %+v", u)
	}
}

func TestSetupDryRunChangesNothing(t *testing.T) {
	f := &fakeAdmin{queues: map[string]admin.QueueProperties{"msisync": existing()}}
	plan, err := setupWith(t.Context(), f, "msisync", DefaultQueueSettings(), true)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Applied || len(f.updates) != 0 || len(plan.Changes) != 3 {
		t.Fatalf("dry run: %+v, updates %d", plan, len(f.updates))
	}
	if s := plan.String(); !strings.Contains(s, "would change") || !strings.Contains(s, "LockDuration") || !strings.Contains(s, "30s -> 1m0s") {
		t.Errorf("dry-run text:\n%s", s)
	}
	if deref(f.queues["msisync"].LockDuration) != "PT30S" {
		t.Error("dry run changed the queue")
	}

	empty := &fakeAdmin{queues: map[string]admin.QueueProperties{}}
	plan, err = setupWith(t.Context(), empty, "other", DefaultQueueSettings(), true)
	if err != nil || !plan.Create || plan.Applied || empty.creates != 0 {
		t.Fatalf("dry run on a missing queue: %+v %v creates %d", plan, err, empty.creates)
	}
	if !strings.Contains(plan.String(), "would create") {
		t.Errorf("text: %s", plan)
	}
}

func TestSetupReportsMissingDuplicateDetection(t *testing.T) {
	p := existing()
	p.RequiresDuplicateDetection = ptr(false)
	p.DuplicateDetectionHistoryTimeWindow = ptr("PT1M")
	f := &fakeAdmin{queues: map[string]admin.QueueProperties{"msisync": p}}
	plan, err := setupWith(t.Context(), f, "msisync", DefaultQueueSettings(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0], "only turn it on when a queue is created") {
		t.Fatalf("warnings %v", plan.Warnings)
	}
	for _, c := range plan.Changes {
		if c.Field == "DuplicateDetectionWindow" {
			t.Errorf("tried to change the window of a queue without duplicate detection: %+v", c)
		}
	}
	if !strings.Contains(plan.String(), "warning: ") {
		t.Errorf("text does not show the warning:\n%s", plan)
	}
	if *f.queues["msisync"].RequiresDuplicateDetection {
		t.Error("setup pretended to enable duplicate detection")
	}
}

func TestSetupErrors(t *testing.T) {
	f := &fakeAdmin{queues: map[string]admin.QueueProperties{}}
	for _, bad := range []QueueSettings{
		{LockDuration: time.Second},
		{LockDuration: 10 * time.Minute},
		{MaxDeliveryCount: -1},
		{DuplicateDetectionWindow: time.Second},
	} {
		if _, err := setupWith(t.Context(), f, "q", bad, false); err == nil {
			t.Errorf("setup accepted %+v", bad)
		}
	}
	if f.creates != 0 {
		t.Error("invalid settings created a queue")
	}
	f.getErr = &azcore.ResponseError{StatusCode: http.StatusUnauthorized}
	_, err := setupWith(t.Context(), f, "q", DefaultQueueSettings(), false)
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "Manage") {
		t.Fatalf("401: %v", err)
	}
	if _, err := Setup(t.Context(), "", "msisync", DefaultQueueSettings(), true); err == nil || !strings.Contains(err.Error(), "MSISYNC_SERVICEBUS is empty") {
		t.Errorf("empty connection: %v", err)
	}
}

func TestISODuration(t *testing.T) {
	for d, s := range map[time.Duration]string{
		time.Minute:                         "PT1M",
		5 * time.Second:                     "PT5S",
		14 * 24 * time.Hour:                 "P14D",
		90 * time.Second:                    "PT1M30S",
		26*time.Hour + 500*time.Millisecond: "P1DT2H0.5S",
	} {
		if got := isoDuration(d); got != s {
			t.Errorf("isoDuration(%v) = %q, want %q", d, got, s)
		}
		back, err := parseISODuration(s)
		if err != nil || back != d {
			t.Errorf("parseISODuration(%q) = %v, %v; want %v", s, back, err, d)
		}
	}
	if d, err := parseISODuration("P10675199DT2H48M5.4775807S"); err != nil || d != time.Duration(math.MaxInt64) {
		t.Errorf("infinite TTL: %v %v", d, err)
	}
	for _, bad := range []string{"", "P", "PT", "1M", "P1W", "PT1X"} {
		if _, err := parseISODuration(bad); err == nil {
			t.Errorf("parseISODuration(%q) accepted", bad)
		}
	}
}

func TestEmulatorTransportRewritesToHTTP(t *testing.T) {
	if !isEmulator("Endpoint=sb://localhost;SharedAccessKeyName=a;SharedAccessKey=b;UseDevelopmentEmulator=true;") {
		t.Fatal("emulator connection string not recognised")
	}
	if isEmulator("Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=b") {
		t.Fatal("real namespace taken for the emulator")
	}
	c, err := newAdminClient("Endpoint=sb://localhost;SharedAccessKeyName=a;SharedAccessKey=b;UseDevelopmentEmulator=true;")
	if err != nil || c == nil {
		t.Fatalf("admin client for the emulator: %v", err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("plain http " + r.URL.Path))
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	req, _ := http.NewRequest(http.MethodGet, "https://"+u.Host+"/msisync", nil)
	resp, err := emulatorTransport{}.Do(req)
	if err != nil {
		t.Fatalf("https request through the emulator transport: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "plain http /msisync" {
		t.Fatalf("response %q", body)
	}
}
