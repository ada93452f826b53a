package servicebus

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin"
)

// QueueSettings are the queue properties msisync relies on.
type QueueSettings struct {
	// LockDuration is the peek-lock duration: 5 s to 5 min. Default 1 min.
	LockDuration time.Duration
	// MaxDeliveryCount dead-letters a message after this many deliveries. Default 10.
	MaxDeliveryCount int
	// DuplicateDetectionWindow is how long a MessageID is remembered:
	// 20 s to 7 days. Default 10 min. Duplicate detection itself is always on.
	DuplicateDetectionWindow time.Duration
	// DeadLetterOnExpiry dead-letters expired messages instead of dropping
	// them. Not defaulted (false is a valid choice): start from
	// DefaultQueueSettings.
	DeadLetterOnExpiry bool
	// DefaultTTL is the message time to live. Default 14 days.
	DefaultTTL time.Duration
}

// DefaultQueueSettings are the settings `msisync queue setup` applies, and
// what deployments/servicebus/Config.json gives the emulator's queue.
func DefaultQueueSettings() QueueSettings {
	return QueueSettings{
		LockDuration:             time.Minute,
		MaxDeliveryCount:         10,
		DuplicateDetectionWindow: 10 * time.Minute,
		DeadLetterOnExpiry:       true,
		DefaultTTL:               14 * 24 * time.Hour,
	}
}

func (s QueueSettings) withDefaults() QueueSettings {
	d := DefaultQueueSettings()
	if s.LockDuration == 0 {
		s.LockDuration = d.LockDuration
	}
	if s.MaxDeliveryCount == 0 {
		s.MaxDeliveryCount = d.MaxDeliveryCount
	}
	if s.DuplicateDetectionWindow == 0 {
		s.DuplicateDetectionWindow = d.DuplicateDetectionWindow
	}
	if s.DefaultTTL == 0 {
		s.DefaultTTL = d.DefaultTTL
	}
	return s
}

func (s QueueSettings) validate() error {
	switch {
	case s.LockDuration < 5*time.Second || s.LockDuration > 5*time.Minute:
		return fmt.Errorf("lock duration %v: Service Bus allows 5s to 5m", s.LockDuration)
	case s.MaxDeliveryCount < 1:
		return fmt.Errorf("max delivery count %d: must be at least 1", s.MaxDeliveryCount)
	case s.DuplicateDetectionWindow < 20*time.Second || s.DuplicateDetectionWindow > 7*24*time.Hour:
		return fmt.Errorf("duplicate detection window %v: Service Bus allows 20s to 7 days", s.DuplicateDetectionWindow)
	case s.DefaultTTL < time.Second:
		return fmt.Errorf("default TTL %v: must be at least 1s", s.DefaultTTL)
	}
	return nil
}

// Change is one queue property Setup changes (or would change).
type Change struct {
	Field string
	From  string // "" when the queue is being created
	To    string
}

// Plan is what Setup found and did.
type Plan struct {
	Queue   string
	Create  bool     // the queue does not exist (and was created unless DryRun)
	Changes []Change // properties that differ from the wanted settings
	// Warnings are differences Setup cannot fix, e.g. duplicate detection on
	// an existing queue (it can only be enabled when a queue is created).
	Warnings []string
	DryRun   bool
	Applied  bool // something was created or updated
}

// String renders the plan for `msisync queue setup [--dry-run]`.
func (p Plan) String() string {
	var b strings.Builder
	switch {
	case p.Create && p.DryRun:
		fmt.Fprintf(&b, "queue %q does not exist; would create it with:\n", p.Queue)
	case p.Create:
		fmt.Fprintf(&b, "created queue %q with:\n", p.Queue)
	case len(p.Changes) == 0:
		fmt.Fprintf(&b, "queue %q is up to date\n", p.Queue)
	case p.DryRun:
		fmt.Fprintf(&b, "queue %q: would change:\n", p.Queue)
	default:
		fmt.Fprintf(&b, "queue %q: changed:\n", p.Queue)
	}
	for _, c := range p.Changes {
		if p.Create {
			fmt.Fprintf(&b, "  %-26s %s\n", c.Field, c.To)
		} else {
			fmt.Fprintf(&b, "  %-26s %s -> %s\n", c.Field, c.From, c.To)
		}
	}
	for _, w := range p.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	return strings.TrimRight(b.String(), "\n")
}

// adminAPI is the part of *admin.Client Setup uses.
type adminAPI interface {
	GetQueue(ctx context.Context, queueName string, options *admin.GetQueueOptions) (*admin.GetQueueResponse, error)
	CreateQueue(ctx context.Context, queueName string, options *admin.CreateQueueOptions) (admin.CreateQueueResponse, error)
	UpdateQueue(ctx context.Context, queueName string, properties admin.QueueProperties, options *admin.UpdateQueueOptions) (admin.UpdateQueueResponse, error)
}

var _ adminAPI = (*admin.Client)(nil)

// Setup creates queueName with want, or updates the properties that differ,
// and returns what differed. With dryRun it changes nothing. conn is the
// MSISYNC_SERVICEBUS value (connection string with Manage rights, or a
// namespace host name for DefaultAzureCredential); an empty queueName means
// DefaultQueueName. Zero fields of want take
// the defaults of DefaultQueueSettings (except DeadLetterOnExpiry).
func Setup(ctx context.Context, conn, queueName string, want QueueSettings, dryRun bool) (Plan, error) {
	queueName = strings.TrimSpace(queueName)
	if queueName == "" {
		queueName = DefaultQueueName
	}
	c, err := newAdminClient(conn)
	if err != nil {
		return Plan{}, err
	}
	return setupWith(ctx, c, queueName, want, dryRun)
}

func newAdminClient(conn string) (*admin.Client, error) {
	conn = strings.TrimSpace(conn)
	if conn == "" {
		return nil, errors.New("servicebus: queue setup: MSISYNC_SERVICEBUS is empty")
	}
	if isConnectionString(conn) {
		var opts *admin.ClientOptions
		if isEmulator(conn) {
			// The emulator's management API is plain HTTP on :5300 and the
			// SDK only speaks HTTPS to it; this is the transport the
			// emulator's own Go sample uses.
			opts = &admin.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: emulatorTransport{}}}
		}
		c, err := admin.NewClientFromConnectionString(conn, opts)
		if err != nil {
			return nil, fmt.Errorf("servicebus: queue setup: MSISYNC_SERVICEBUS is not a valid connection string: %w", err)
		}
		return c, nil
	}
	host, err := namespaceHost(conn)
	if err != nil {
		return nil, err
	}
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("servicebus: queue setup: no Azure credential for namespace %s: %w", host, err)
	}
	c, err := admin.NewClient(host, cred, nil)
	if err != nil {
		return nil, fmt.Errorf("servicebus: queue setup: admin client for %s: %w", host, err)
	}
	return c, nil
}

func isEmulator(conn string) bool {
	return strings.Contains(strings.ToLower(strings.ReplaceAll(conn, " ", "")), "usedevelopmentemulator=true")
}

// emulatorTransport sends admin requests over HTTP to the emulator's
// management port (5300 unless the endpoint names one).
type emulatorTransport struct{}

func (emulatorTransport) Do(req *http.Request) (*http.Response, error) {
	req.URL.Scheme = "http"
	req.URL.Host = emulatorAdminHost(req.URL)
	return http.DefaultClient.Do(req)
}

// emulatorAdminHost is where the emulator's management API listens: port
// 5300 unless the endpoint names another port. 5672 is the emulator's AMQP
// port, which connection strings often name ("sb://localhost:5672"): admin
// calls go to 5300 then too.
func emulatorAdminHost(u *url.URL) string {
	if p := u.Port(); p != "" && p != "5672" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "5300")
}

func setupWith(ctx context.Context, c adminAPI, queueName string, want QueueSettings, dryRun bool) (Plan, error) {
	want = want.withDefaults()
	if err := want.validate(); err != nil {
		return Plan{}, fmt.Errorf("servicebus: queue setup %q: %w", queueName, err)
	}
	plan := Plan{Queue: queueName, DryRun: dryRun}
	got, err := c.GetQueue(ctx, queueName, nil)
	if err != nil {
		return Plan{}, adminErr("read queue "+strconv.Quote(queueName), err)
	}
	if got == nil {
		plan.Create = true
		plan.Changes = []Change{
			{Field: "LockDuration", To: durationText(want.LockDuration)},
			{Field: "MaxDeliveryCount", To: strconv.Itoa(want.MaxDeliveryCount)},
			{Field: "RequiresDuplicateDetection", To: "true"},
			{Field: "DuplicateDetectionWindow", To: durationText(want.DuplicateDetectionWindow)},
			{Field: "DeadLetteringOnExpiration", To: strconv.FormatBool(want.DeadLetterOnExpiry)},
			{Field: "DefaultMessageTimeToLive", To: durationText(want.DefaultTTL)},
		}
		if dryRun {
			return plan, nil
		}
		props := admin.QueueProperties{
			LockDuration:                        ptr(isoDuration(want.LockDuration)),
			MaxDeliveryCount:                    ptr(int32(want.MaxDeliveryCount)),
			RequiresDuplicateDetection:          ptr(true),
			DuplicateDetectionHistoryTimeWindow: ptr(isoDuration(want.DuplicateDetectionWindow)),
			DeadLetteringOnMessageExpiration:    ptr(want.DeadLetterOnExpiry),
			DefaultMessageTimeToLive:            ptr(isoDuration(want.DefaultTTL)),
		}
		if _, err := c.CreateQueue(ctx, queueName, &admin.CreateQueueOptions{Properties: &props}); err != nil {
			return Plan{}, adminErr("create queue "+strconv.Quote(queueName), err)
		}
		plan.Applied = true
		return plan, nil
	}

	props := got.QueueProperties // update sends the full set back
	// What Setup cannot change on an existing queue: say so, and how to fix it.
	for _, p := range checkProperties(queueName, props) {
		switch p.Field {
		case "RequiresDuplicateDetection", "LockDuration", "MaxDeliveryCount":
			// warned about below, or changed
		default:
			plan.Warnings = append(plan.Warnings, p.What+" Fix: "+p.Fix)
		}
	}
	durationField := func(field string, cur **string, want time.Duration) error {
		have, err := parseISODuration(deref(*cur))
		if err != nil && *cur != nil {
			return fmt.Errorf("queue %q has %s %q: %w", queueName, field, deref(*cur), err)
		}
		if *cur == nil || have != want {
			from := "(unset)"
			if *cur != nil {
				from = durationText(have)
			}
			plan.Changes = append(plan.Changes, Change{Field: field, From: from, To: durationText(want)})
			*cur = ptr(isoDuration(want))
		}
		return nil
	}
	if err := durationField("LockDuration", &props.LockDuration, want.LockDuration); err != nil {
		return Plan{}, fmt.Errorf("servicebus: queue setup: %w", err)
	}
	if props.MaxDeliveryCount == nil || int(*props.MaxDeliveryCount) != want.MaxDeliveryCount {
		from := "(unset)"
		if props.MaxDeliveryCount != nil {
			from = strconv.Itoa(int(*props.MaxDeliveryCount))
		}
		plan.Changes = append(plan.Changes, Change{Field: "MaxDeliveryCount", From: from, To: strconv.Itoa(want.MaxDeliveryCount)})
		props.MaxDeliveryCount = ptr(int32(want.MaxDeliveryCount))
	}
	if props.RequiresDuplicateDetection == nil || !*props.RequiresDuplicateDetection {
		plan.Warnings = append(plan.Warnings, fmt.Sprintf(
			"queue %q has duplicate detection off, and Service Bus can only turn it on when a queue is created: "+
				"repeated webhook deliveries will not be dropped. Delete the queue (after draining it) and run `msisync queue setup` again.", queueName))
	} else if err := durationField("DuplicateDetectionWindow", &props.DuplicateDetectionHistoryTimeWindow, want.DuplicateDetectionWindow); err != nil {
		return Plan{}, fmt.Errorf("servicebus: queue setup: %w", err)
	}
	if props.DeadLetteringOnMessageExpiration == nil || *props.DeadLetteringOnMessageExpiration != want.DeadLetterOnExpiry {
		from := "(unset)"
		if props.DeadLetteringOnMessageExpiration != nil {
			from = strconv.FormatBool(*props.DeadLetteringOnMessageExpiration)
		}
		plan.Changes = append(plan.Changes, Change{Field: "DeadLetteringOnExpiration", From: from, To: strconv.FormatBool(want.DeadLetterOnExpiry)})
		props.DeadLetteringOnMessageExpiration = ptr(want.DeadLetterOnExpiry)
	}
	if err := durationField("DefaultMessageTimeToLive", &props.DefaultMessageTimeToLive, want.DefaultTTL); err != nil {
		return Plan{}, fmt.Errorf("servicebus: queue setup: %w", err)
	}
	if dryRun || len(plan.Changes) == 0 {
		return plan, nil
	}
	if _, err := c.UpdateQueue(ctx, queueName, props, nil); err != nil {
		return Plan{}, adminErr("update queue "+strconv.Quote(queueName), err)
	}
	plan.Applied = true
	return plan, nil
}

// adminErr explains the admin API's failures; 401/403 mean the credential
// lacks Manage rights, which sending and receiving do not need.
func adminErr(op string, err error) error {
	var re *azcore.ResponseError
	if errors.As(err, &re) && (re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden) {
		return fmt.Errorf("servicebus: queue setup: %s: %w: the credential in MSISYNC_SERVICEBUS needs Manage rights "+
			"(or the Azure Service Bus Data Owner role) to create or update queues (HTTP %d)", op, ErrUnauthorized, re.StatusCode)
	}
	return fmt.Errorf("servicebus: queue setup: %s: %w", op, err)
}

func ptr[T any](v T) *T { return &v }

// isoDuration formats d as an ISO 8601 duration, as the admin API wants
// ("PT1M", "P14D", "PT1M30S").
func isoDuration(d time.Duration) string {
	if d <= 0 {
		return "PT0S"
	}
	var b strings.Builder
	b.WriteString("P")
	if days := d / (24 * time.Hour); days > 0 {
		fmt.Fprintf(&b, "%dD", days)
		d -= days * 24 * time.Hour
	}
	if d == 0 {
		return b.String()
	}
	b.WriteString("T")
	if h := d / time.Hour; h > 0 {
		fmt.Fprintf(&b, "%dH", h)
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		fmt.Fprintf(&b, "%dM", m)
		d -= m * time.Minute
	}
	if d > 0 {
		b.WriteString(strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "S")
	}
	return b.String()
}

var isoRE = regexp.MustCompile(`^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$`)

// parseISODuration reads the admin API's durations. Values beyond
// time.Duration's range (the service's "infinite" TTL is
// P10675199DT2H48M5.4775807S) come back as math.MaxInt64.
func parseISODuration(s string) (time.Duration, error) {
	m := isoRE.FindStringSubmatch(strings.ToUpper(strings.TrimSpace(s)))
	if m == nil || s == "P" || strings.HasSuffix(strings.ToUpper(s), "T") {
		return 0, fmt.Errorf("%q is not an ISO 8601 duration (like PT1M)", s)
	}
	var total float64
	for i, unit := range []float64{24 * 3600, 3600, 60, 1} {
		if m[i+1] == "" {
			continue
		}
		v, err := strconv.ParseFloat(m[i+1], 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not an ISO 8601 duration: %w", s, err)
		}
		total += v * unit
	}
	ns := total * float64(time.Second)
	if ns >= math.MaxInt64 {
		return time.Duration(math.MaxInt64), nil
	}
	return time.Duration(math.Round(ns)), nil
}

func durationText(d time.Duration) string {
	switch {
	case d == time.Duration(math.MaxInt64):
		return "unlimited"
	case d > 0 && d%(24*time.Hour) == 0:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	return d.String()
}
