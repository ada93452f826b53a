package dataverse

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/msisync/msisync/internal/event"
)

// Auth types of a webhook serviceendpoint.
const (
	AuthWebhookKey = "WebhookKey" // authtype 4: sent as ?code=<key>
	AuthHTTPHeader = "HttpHeader" // authtype 5: sent as the header <Header>: <key>
)

// DefaultName names the serviceendpoint and prefixes the step names.
const DefaultName = "msisync"

// DefaultHeader is the header carrying the key with HttpHeader auth.
const DefaultHeader = "x-msisync-key"

// RegisterOptions describe the webhook to register.
type RegisterOptions struct {
	URL      string // public receiver URL, e.g. https://host/webhooks/dataverse
	AuthType string // AuthWebhookKey (default) or AuthHTTPHeader
	Key      string // the shared secret (write-only in Dataverse)
	Header   string // header name for AuthHTTPHeader (default DefaultHeader)
	Name     string // endpoint name and step prefix (default DefaultName)
	// Salt keys the HMAC of the key fingerprint kept in the endpoint's
	// description (≥ 16 bytes, secret, one per installation: main keeps it
	// in the store), so the description gives no handle on the key.
	Salt   []byte
	Steps  []StepSpec
	DryRun bool
}

// StepSpec is one asynchronous post-operation step to register.
type StepSpec struct {
	Entity, Message     string
	FilteringAttributes []string // Update only: the step fires when one of them changes
	PostImageAttributes []string // post image "PostImage" (none on Delete)
	PreImageAttributes  []string // pre image "PreImage" (none on Create)
}

// Plan operations.
const (
	OpCreate = "create"
	OpUpdate = "update"
	OpDelete = "delete"
	OpKeep   = "keep"
)

// Action is one step of a Plan.
type Action struct {
	Op     string // OpCreate, OpUpdate, OpDelete or OpKeep
	Table  string // serviceendpoint, sdkmessageprocessingstep, sdkmessageprocessingstepimage
	Name   string
	ID     string // "" for a create in a dry run
	Detail string // what changes
}

// Plan is what Register or Unregister did (or, in a dry run, would do).
type Plan struct {
	EndpointID string
	Actions    []Action
}

// Changes counts the actions that write.
func (p Plan) Changes() int {
	n := 0
	for _, a := range p.Actions {
		if a.Op != OpKeep {
			n++
		}
	}
	return n
}

// String renders the plan one action per line.
func (p Plan) String() string {
	var b strings.Builder
	for _, a := range p.Actions {
		fmt.Fprintf(&b, "%-6s %-29s %s", a.Op, a.Table, a.Name)
		if a.ID != "" {
			fmt.Fprintf(&b, " (%s)", a.ID)
		}
		if a.Detail != "" {
			fmt.Fprintf(&b, ": %s", a.Detail)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// StepName is the name msisync gives a step: "<name>: <Message> of <entity>".
func StepName(name, message, entity string) string {
	return fmt.Sprintf("%s: %s of %s", name, message, entity)
}

// messageProperty is the image's messagepropertyname for a message.
func messageProperty(message string) string {
	switch message {
	case event.MessageSetState, event.MessageSetStateDynamicEntity:
		return "EntityMoniker"
	case event.MessageQualifyLead:
		return "LeadId"
	}
	return "Target"
}

func normList(cols []string) string {
	var out []string
	for _, c := range cols {
		if c = strings.ToLower(strings.TrimSpace(c)); c != "" && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func normCSV(s string) string { return normList(strings.Split(s, ",")) }

func odataString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// keyFingerprint lets Register tell whether the write-only authvalue is
// current without storing the key: a short HMAC in the description, keyed
// by the installation's secret salt, so the same key gives unrelated
// fingerprints in two installations and none can be checked against a
// guessed key without the salt.
func keyFingerprint(salt []byte, authType int, header, key string) string {
	m := hmac.New(sha256.New, salt)
	fmt.Fprintf(m, "msisync\x00%d\x00%s\x00%s", authType, header, key)
	return "h" + hex.EncodeToString(m.Sum(nil)[:8])
}

// MinSaltBytes is the shortest RegisterOptions.Salt accepted.
const MinSaltBytes = 16

func (o *RegisterOptions) normalize() error {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.AuthType == "" {
		o.AuthType = AuthWebhookKey
	}
	u, err := url.Parse(o.URL)
	if o.URL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("dataverse: register: --url %q must be the absolute public URL of the receiver, e.g. https://host/webhooks/dataverse", o.URL)
	}
	if u.RawQuery != "" {
		return fmt.Errorf("dataverse: register: --url %q must not have a query (Dataverse adds ?code= for WebhookKey)", o.URL)
	}
	switch o.AuthType {
	case AuthWebhookKey:
	case AuthHTTPHeader:
		if o.Header == "" {
			o.Header = DefaultHeader
		}
		if !headerName.MatchString(o.Header) {
			return fmt.Errorf("dataverse: register: header name %q is not a valid HTTP header name", o.Header)
		}
	default:
		return fmt.Errorf("dataverse: register: auth type %q is not %s or %s", o.AuthType, AuthWebhookKey, AuthHTTPHeader)
	}
	if o.Key == "" {
		return errors.New("dataverse: register: the webhook key (MSISYNC_WEBHOOK_KEY) is required")
	}
	if len(o.Salt) < MinSaltBytes {
		return fmt.Errorf("dataverse: register: the key fingerprint salt has %d bytes, want at least %d", len(o.Salt), MinSaltBytes)
	}
	if strings.ContainsFunc(o.Key, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return errors.New("dataverse: register: the webhook key contains control characters")
	}
	if len(o.Steps) == 0 {
		o.Steps = DefaultSteps()
	}
	seen := map[string]bool{}
	for i, s := range o.Steps {
		if s.Entity == "" || s.Message == "" {
			return fmt.Errorf("dataverse: register: step %d needs an entity and a message", i)
		}
		k := s.Message + " " + s.Entity
		if seen[k] {
			return fmt.Errorf("dataverse: register: step %s of %s is listed twice", s.Message, s.Entity)
		}
		seen[k] = true
	}
	return nil
}

var headerName = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`)

// checkPort applies Dataverse's rule that webhooks use ports 80 and 443, to
// real environments only (simulators post wherever they are told).
func (c *Client) checkPort(raw string) error {
	u, _ := url.Parse(raw)
	host := strings.TrimPrefix(strings.TrimPrefix(c.origin, "https://"), "http://")
	if h, _, ok := strings.Cut(host, ":"); ok {
		host = h
	}
	if !strings.HasSuffix(host, ".dynamics.com") {
		return nil
	}
	if p := u.Port(); p != "" && p != "443" && p != "80" {
		return fmt.Errorf("dataverse: register: --url %q: Dataverse webhooks allow only ports 80 and 443", raw)
	}
	return nil
}

func (o RegisterOptions) authValue() (int, string) {
	if o.AuthType == AuthHTTPHeader {
		type setting struct {
			Name  string `xml:"name,attr"`
			Value string `xml:"value,attr"`
		}
		type settings struct {
			XMLName xml.Name `xml:"settings"`
			Setting setting  `xml:"setting"`
		}
		b, _ := xml.Marshal(settings{Setting: setting{Name: o.Header, Value: o.Key}})
		return 5, string(b)
	}
	return 4, o.Key
}

// Register creates or updates the webhook serviceendpoint and one
// asynchronous post-operation step (mode 1, stage 40, asyncautodelete) per
// StepSpec with its images, and removes steps of the endpoint that are no
// longer wanted. Running it twice changes nothing. With DryRun it only
// reads and returns the plan.
func (c *Client) Register(ctx context.Context, o RegisterOptions) (Plan, error) {
	if err := o.normalize(); err != nil {
		return Plan{}, err
	}
	if err := c.checkPort(o.URL); err != nil {
		return Plan{}, err
	}
	var plan Plan
	authType, authValue := o.authValue()
	desc := "Managed by msisync; key fingerprint " + keyFingerprint(o.Salt, authType, o.Header, o.Key)

	// Resolve messages and filters first, so a bad spec writes nothing.
	type resolved struct {
		spec            StepSpec
		msgID, filterID string
		name, filtering string
		pre, post       string
		preOK, postOK   bool
	}
	var want []resolved
	msgIDs := map[string]string{}
	for _, s := range o.Steps {
		mid, ok := msgIDs[s.Message]
		if !ok {
			rows, err := c.listAll(ctx, "sdkmessages", "$select=sdkmessageid,name&$filter="+queryEscape("name eq "+odataString(s.Message)))
			if err != nil {
				return plan, fmt.Errorf("dataverse: register: find message %s: %w", s.Message, err)
			}
			if len(rows) == 0 {
				return plan, fmt.Errorf("dataverse: register: message %q does not exist in this environment", s.Message)
			}
			mid = str(rows[0]["sdkmessageid"])
			msgIDs[s.Message] = mid
		}
		rows, err := c.listAll(ctx, "sdkmessagefilters", "$select=sdkmessagefilterid&$filter="+
			queryEscape("_sdkmessageid_value eq "+mid+" and primaryobjecttypecode eq "+odataString(s.Entity)))
		if err != nil {
			return plan, fmt.Errorf("dataverse: register: find filter for %s of %s: %w", s.Message, s.Entity, err)
		}
		if len(rows) == 0 {
			return plan, fmt.Errorf("dataverse: register: message %s is not available for table %s (no sdkmessagefilter)", s.Message, s.Entity)
		}
		r := resolved{spec: s, msgID: mid, filterID: str(rows[0]["sdkmessagefilterid"]), name: StepName(o.Name, s.Message, s.Entity)}
		if s.Message == event.MessageUpdate {
			r.filtering = normList(s.FilteringAttributes)
		}
		r.pre, r.preOK = normList(s.PreImageAttributes), len(s.PreImageAttributes) > 0 && s.Message != event.MessageCreate && s.Message != event.MessageQualifyLead
		r.post, r.postOK = normList(s.PostImageAttributes), len(s.PostImageAttributes) > 0 && s.Message != event.MessageDelete && s.Message != event.MessageQualifyLead
		want = append(want, r)
	}

	// The endpoint.
	ep, err := c.findEndpoint(ctx, o.Name)
	if err != nil {
		return plan, err
	}
	epBody := map[string]any{"name": o.Name, "contract": 8, "authtype": authType, "url": o.URL, "authvalue": authValue,
		"description": desc, "messageformat": 2}
	switch {
	case ep == nil:
		plan.Actions = append(plan.Actions, Action{Op: OpCreate, Table: "serviceendpoint", Name: o.Name, Detail: fmt.Sprintf("webhook %s, %s auth", o.URL, o.AuthType)})
		if !o.DryRun {
			id, err := c.createRow(ctx, "serviceendpoints", epBody)
			if err != nil {
				return plan, fmt.Errorf("dataverse: register: create webhook %s: %w", o.Name, err)
			}
			plan.Actions[len(plan.Actions)-1].ID = id
			plan.EndpointID = id
		}
	default:
		plan.EndpointID = ep.ID
		var diffs []string
		if ep.URL != o.URL {
			diffs = append(diffs, fmt.Sprintf("url %s → %s", ep.URL, o.URL))
		}
		if ep.AuthType != authType {
			diffs = append(diffs, fmt.Sprintf("authtype %d → %d", ep.AuthType, authType))
		}
		if ep.Description != desc {
			diffs = append(diffs, "key changed")
		}
		if len(diffs) == 0 {
			plan.Actions = append(plan.Actions, Action{Op: OpKeep, Table: "serviceendpoint", Name: o.Name, ID: ep.ID})
		} else {
			plan.Actions = append(plan.Actions, Action{Op: OpUpdate, Table: "serviceendpoint", Name: o.Name, ID: ep.ID, Detail: strings.Join(diffs, "; ")})
			if !o.DryRun {
				if err := c.patchRow(ctx, "serviceendpoints", ep.ID, epBody); err != nil {
					return plan, fmt.Errorf("dataverse: register: update webhook %s: %w", o.Name, err)
				}
			}
		}
	}

	// Existing steps and images of the endpoint.
	var steps []stepRow
	images := map[string][]imageRow{}
	if ep != nil {
		if steps, err = c.endpointSteps(ctx, ep.ID); err != nil {
			return plan, fmt.Errorf("dataverse: register: %w", err)
		}
		if images, err = c.stepImages(ctx, steps); err != nil {
			return plan, fmt.Errorf("dataverse: register: %w", err)
		}
	}
	byName := map[string]stepRow{}
	for _, st := range steps {
		if _, dup := byName[st.Name]; dup || !slices.ContainsFunc(want, func(r resolved) bool { return r.name == st.Name }) {
			// Unwanted or duplicate: remove it with its images.
			for _, img := range images[st.ID] {
				plan.Actions = append(plan.Actions, Action{Op: OpDelete, Table: "sdkmessageprocessingstepimage", Name: st.Name + " / " + img.Alias, ID: img.ID})
			}
			plan.Actions = append(plan.Actions, Action{Op: OpDelete, Table: "sdkmessageprocessingstep", Name: st.Name, ID: st.ID})
			if !o.DryRun {
				if err := c.deleteStep(ctx, st, images[st.ID]); err != nil {
					return plan, fmt.Errorf("dataverse: register: %w", err)
				}
			}
			continue
		}
		byName[st.Name] = st
	}
	for _, r := range want {
		body := map[string]any{"name": r.name, "mode": 1, "stage": 40, "rank": 1, "supporteddeployment": 0, "asyncautodelete": true,
			"filteringattributes": r.filtering, "description": "Sends " + r.spec.Message + " of " + r.spec.Entity + " to msisync",
			"sdkmessageid@odata.bind": "/sdkmessages(" + r.msgID + ")", "sdkmessagefilterid@odata.bind": "/sdkmessagefilters(" + r.filterID + ")"}
		st, exists := byName[r.name]
		stepID := st.ID
		if !exists {
			detail := "async post-operation"
			if r.filtering != "" {
				detail += ", filtering " + r.filtering
			}
			plan.Actions = append(plan.Actions, Action{Op: OpCreate, Table: "sdkmessageprocessingstep", Name: r.name, Detail: detail})
			if !o.DryRun {
				body["eventhandler_serviceendpoint@odata.bind"] = "/serviceendpoints(" + plan.EndpointID + ")"
				id, err := c.createRow(ctx, "sdkmessageprocessingsteps", body)
				if err != nil {
					return plan, fmt.Errorf("dataverse: register: create step %q: %w", r.name, err)
				}
				plan.Actions[len(plan.Actions)-1].ID = id
				stepID = id
			}
		} else {
			var diffs []string
			if st.Mode != 1 || st.Stage != 40 {
				diffs = append(diffs, fmt.Sprintf("mode/stage %d/%d → 1/40", st.Mode, st.Stage))
			}
			if !st.AutoDelete {
				diffs = append(diffs, "asyncautodelete → true")
			}
			if normCSV(st.Filtering) != r.filtering {
				diffs = append(diffs, fmt.Sprintf("filteringattributes %q → %q", st.Filtering, r.filtering))
			}
			if st.MessageID != r.msgID || st.FilterID != r.filterID {
				diffs = append(diffs, "message/table")
			}
			if st.State != 0 {
				diffs = append(diffs, "enable")
				body["statecode"], body["statuscode"] = 0, 1
			}
			if len(diffs) == 0 {
				plan.Actions = append(plan.Actions, Action{Op: OpKeep, Table: "sdkmessageprocessingstep", Name: r.name, ID: st.ID})
			} else {
				plan.Actions = append(plan.Actions, Action{Op: OpUpdate, Table: "sdkmessageprocessingstep", Name: r.name, ID: st.ID, Detail: strings.Join(diffs, "; ")})
				if !o.DryRun {
					if err := c.patchRow(ctx, "sdkmessageprocessingsteps", st.ID, body); err != nil {
						return plan, fmt.Errorf("dataverse: register: update step %q: %w", r.name, err)
					}
				}
			}
		}
		// Images.
		type wantImage struct {
			alias string
			typ   int
			attrs string
		}
		var wimgs []wantImage
		if r.preOK {
			wimgs = append(wimgs, wantImage{"PreImage", 0, r.pre})
		}
		if r.postOK {
			wimgs = append(wimgs, wantImage{"PostImage", 1, r.post})
		}
		have := map[string]imageRow{}
		for _, img := range images[st.ID] {
			if _, dup := have[img.Alias]; dup || !slices.ContainsFunc(wimgs, func(w wantImage) bool { return w.alias == img.Alias }) {
				plan.Actions = append(plan.Actions, Action{Op: OpDelete, Table: "sdkmessageprocessingstepimage", Name: r.name + " / " + img.Alias, ID: img.ID})
				if !o.DryRun {
					if err := c.deleteRow(ctx, "sdkmessageprocessingstepimages", img.ID); err != nil {
						return plan, fmt.Errorf("dataverse: register: delete image %s of %q: %w", img.Alias, r.name, err)
					}
				}
				continue
			}
			have[img.Alias] = img
		}
		for _, w := range wimgs {
			body := map[string]any{"name": w.alias, "entityalias": w.alias, "imagetype": w.typ,
				"messagepropertyname": messageProperty(r.spec.Message), "attributes": w.attrs}
			img, ok := have[w.alias]
			switch {
			case !ok:
				plan.Actions = append(plan.Actions, Action{Op: OpCreate, Table: "sdkmessageprocessingstepimage", Name: r.name + " / " + w.alias, Detail: w.attrs})
				if !o.DryRun {
					body["sdkmessageprocessingstepid@odata.bind"] = "/sdkmessageprocessingsteps(" + stepID + ")"
					id, err := c.createRow(ctx, "sdkmessageprocessingstepimages", body)
					if err != nil {
						return plan, fmt.Errorf("dataverse: register: create image %s of %q: %w", w.alias, r.name, err)
					}
					plan.Actions[len(plan.Actions)-1].ID = id
				}
			case img.Type != w.typ || normCSV(img.Attributes) != w.attrs || img.Property != messageProperty(r.spec.Message):
				plan.Actions = append(plan.Actions, Action{Op: OpUpdate, Table: "sdkmessageprocessingstepimage", Name: r.name + " / " + w.alias, ID: img.ID,
					Detail: fmt.Sprintf("attributes %q → %q", img.Attributes, w.attrs)})
				if !o.DryRun {
					if err := c.patchRow(ctx, "sdkmessageprocessingstepimages", img.ID, body); err != nil {
						return plan, fmt.Errorf("dataverse: register: update image %s of %q: %w", w.alias, r.name, err)
					}
				}
			default:
				plan.Actions = append(plan.Actions, Action{Op: OpKeep, Table: "sdkmessageprocessingstepimage", Name: r.name + " / " + w.alias, ID: img.ID})
			}
		}
	}
	return plan, nil
}

// Unregister deletes the endpoint named name with its steps and images.
// Nothing registered is not an error (an empty plan).
func (c *Client) Unregister(ctx context.Context, name string, dryRun bool) (Plan, error) {
	if name == "" {
		name = DefaultName
	}
	var plan Plan
	ep, err := c.findEndpoint(ctx, name)
	if err != nil || ep == nil {
		return plan, err
	}
	plan.EndpointID = ep.ID
	steps, err := c.endpointSteps(ctx, ep.ID)
	if err != nil {
		return plan, fmt.Errorf("dataverse: unregister: %w", err)
	}
	images, err := c.stepImages(ctx, steps)
	if err != nil {
		return plan, fmt.Errorf("dataverse: unregister: %w", err)
	}
	for _, st := range steps {
		for _, img := range images[st.ID] {
			plan.Actions = append(plan.Actions, Action{Op: OpDelete, Table: "sdkmessageprocessingstepimage", Name: st.Name + " / " + img.Alias, ID: img.ID})
		}
		plan.Actions = append(plan.Actions, Action{Op: OpDelete, Table: "sdkmessageprocessingstep", Name: st.Name, ID: st.ID})
		if !dryRun {
			if err := c.deleteStep(ctx, st, images[st.ID]); err != nil {
				return plan, fmt.Errorf("dataverse: unregister: %w", err)
			}
		}
	}
	plan.Actions = append(plan.Actions, Action{Op: OpDelete, Table: "serviceendpoint", Name: name, ID: ep.ID})
	if !dryRun {
		if err := c.deleteRow(ctx, "serviceendpoints", ep.ID); err != nil {
			return plan, fmt.Errorf("dataverse: unregister: delete webhook %s: %w", name, err)
		}
	}
	return plan, nil
}

// Endpoint is a webhook serviceendpoint (the key is write-only).
type Endpoint struct {
	ID, Name, URL, Description string
	Contract, AuthType         int
}

// StepStatus is a registered step with its images.
type StepStatus struct {
	ID, Name, Message, Entity string
	Mode, Stage               int
	Enabled, AutoDelete       bool
	FilteringAttributes       string
	Images                    []Image
}

// Image is a registered step image.
type Image struct {
	ID, Alias, Attributes, MessageProperty string
	Type                                   int // 0 pre, 1 post, 2 both
}

// Failure is a failed system job (asyncoperation, statuscode 31) of a step.
type Failure struct {
	ID, StepID, StepName, Message, FriendlyMessage, CompletedOn string
	ErrorCode                                                   int64
}

// Status is what is registered under a name. Endpoint is nil when nothing is.
type Status struct {
	Name     string
	Endpoint *Endpoint
	Steps    []StepStatus
	Failures []Failure // most recent first, at most 50
}

// Status lists the endpoint, its steps and images, and the recent failed
// system jobs of its steps.
func (c *Client) Status(ctx context.Context, name string) (Status, error) {
	if name == "" {
		name = DefaultName
	}
	st := Status{Name: name}
	ep, err := c.findEndpoint(ctx, name)
	if err != nil || ep == nil {
		return st, err
	}
	st.Endpoint = ep
	steps, err := c.endpointSteps(ctx, ep.ID)
	if err != nil {
		return st, fmt.Errorf("dataverse: status: %w", err)
	}
	images, err := c.stepImages(ctx, steps)
	if err != nil {
		return st, fmt.Errorf("dataverse: status: %w", err)
	}
	names := map[string]string{}
	for _, s := range steps {
		ss := StepStatus{ID: s.ID, Name: s.Name, Message: s.Message, Mode: s.Mode, Stage: s.Stage, Enabled: s.State == 0,
			AutoDelete: s.AutoDelete, FilteringAttributes: s.Filtering, Entity: s.Entity}
		for _, img := range images[s.ID] {
			ss.Images = append(ss.Images, Image{ID: img.ID, Alias: img.Alias, Attributes: img.Attributes, MessageProperty: img.Property, Type: img.Type})
		}
		st.Steps = append(st.Steps, ss)
		names[s.ID] = s.Name
	}
	// Failed jobs, in groups so the $filter stays short.
	for start := 0; start < len(steps); start += 20 {
		var ors []string
		for _, s := range steps[start:min(start+20, len(steps))] {
			ors = append(ors, "_owningextensionid_value eq "+s.ID)
		}
		q := "$select=asyncoperationid,name,message,friendlymessage,errorcode,completedon,_owningextensionid_value&$orderby=completedon%20desc&$top=50&$filter=" +
			queryEscape("statuscode eq 31 and ("+strings.Join(ors, " or ")+")")
		rows, err := c.listAll(ctx, "asyncoperations", q)
		if err != nil {
			return st, fmt.Errorf("dataverse: status: failed system jobs: %w", err)
		}
		for _, r := range rows {
			sid := str(r["_owningextensionid_value"])
			code, _ := r["errorcode"].(json.Number).Int64()
			st.Failures = append(st.Failures, Failure{ID: str(r["asyncoperationid"]), StepID: sid, StepName: names[sid],
				Message: str(r["message"]), FriendlyMessage: str(r["friendlymessage"]), CompletedOn: str(r["completedon"]), ErrorCode: code})
		}
	}
	slices.SortStableFunc(st.Failures, func(a, b Failure) int { return strings.Compare(b.CompletedOn, a.CompletedOn) })
	if len(st.Failures) > 50 {
		st.Failures = st.Failures[:50]
	}
	return st, nil
}

var authTypeNames = map[int]string{4: AuthWebhookKey, 5: AuthHTTPHeader, 6: "HttpQueryString"}

var imageTypeNames = map[int]string{0: "pre", 1: "post", 2: "pre+post"}

// String renders the status for people.
func (s Status) String() string {
	var b strings.Builder
	if s.Endpoint == nil {
		fmt.Fprintf(&b, "no webhook named %q is registered\n", s.Name)
		return b.String()
	}
	at := authTypeNames[s.Endpoint.AuthType]
	if at == "" {
		at = fmt.Sprintf("authtype %d", s.Endpoint.AuthType)
	}
	fmt.Fprintf(&b, "webhook %s (%s)\n  url  %s\n  auth %s\n", s.Endpoint.Name, s.Endpoint.ID, s.Endpoint.URL, at)
	fmt.Fprintf(&b, "steps (%d):\n", len(s.Steps))
	for _, st := range s.Steps {
		state := "enabled"
		if !st.Enabled {
			state = "DISABLED"
		}
		mode := "async"
		if st.Mode == 0 {
			mode = "SYNC"
		}
		fmt.Fprintf(&b, "  %-40s %s, %s, stage %d", st.Name, state, mode, st.Stage)
		if st.FilteringAttributes != "" {
			fmt.Fprintf(&b, ", filtering %s", st.FilteringAttributes)
		}
		for _, img := range st.Images {
			fmt.Fprintf(&b, "; %s image %s [%s]", imageTypeNames[img.Type], img.Alias, img.Attributes)
		}
		b.WriteByte('\n')
	}
	if len(s.Failures) == 0 {
		b.WriteString("no failed system jobs\n")
		return b.String()
	}
	fmt.Fprintf(&b, "failed system jobs (%d, most recent first):\n", len(s.Failures))
	for _, f := range s.Failures {
		msg := f.FriendlyMessage
		if msg == "" {
			msg = f.Message
		}
		fmt.Fprintf(&b, "  %s  %s  %s\n", f.CompletedOn, f.StepName, msg)
	}
	return b.String()
}

// ---- raw row helpers ----

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

func num(v any) int {
	if n, ok := v.(json.Number); ok {
		i, _ := n.Int64()
		return int(i)
	}
	return 0
}

// listAll reads every page of a query on an entity set, as raw rows.
func (c *Client) listAll(ctx context.Context, set, query string) ([]map[string]any, error) {
	target := set + "?" + query
	var out []map[string]any
	for target != "" {
		_, body, err := c.do(ctx, request{method: http.MethodGet, target: target, idempotent: true,
			header: http.Header{"Prefer": {"odata.maxpagesize=5000," + annotationsPrefer}}})
		if err != nil {
			return nil, err
		}
		m, err := decodeObject(body)
		if err != nil {
			return nil, err
		}
		rows, _ := m["value"].([]any)
		for _, r := range rows {
			if row, ok := r.(map[string]any); ok {
				out = append(out, row)
			}
		}
		target, _ = m["@odata.nextLink"].(string)
	}
	return out, nil
}

func (c *Client) createRow(ctx context.Context, set string, body map[string]any) (string, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return "", err
	}
	resp, _, err := c.do(ctx, request{method: http.MethodPost, target: set, body: b})
	if err != nil {
		return "", err
	}
	loc := resp.Header.Get("OData-EntityId")
	i, j := strings.LastIndexByte(loc, '('), strings.LastIndexByte(loc, ')')
	if i < 0 || j < i || !event.IsGUID(loc[i+1:j]) {
		return "", fmt.Errorf("no id in OData-EntityId %q", loc)
	}
	return event.NormalizeID(loc[i+1 : j]), nil
}

func (c *Client) patchRow(ctx context.Context, set, id string, body map[string]any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	_, _, err = c.do(ctx, request{method: http.MethodPatch, target: set + "(" + id + ")", body: b, idempotent: true,
		header: http.Header{"If-Match": {"*"}}})
	return err
}

func (c *Client) deleteRow(ctx context.Context, set, id string) error {
	_, _, err := c.do(ctx, request{method: http.MethodDelete, target: set + "(" + id + ")", idempotent: true})
	if errors.Is(err, ErrNotFound) {
		return nil // already gone
	}
	return err
}

func (c *Client) findEndpoint(ctx context.Context, name string) (*Endpoint, error) {
	rows, err := c.listAll(ctx, "serviceendpoints", "$select=serviceendpointid,name,url,authtype,contract,description&$filter="+
		queryEscape("name eq "+odataString(name)+" and contract eq 8"))
	if err != nil {
		return nil, fmt.Errorf("dataverse: find webhook %s: %w", name, err)
	}
	switch len(rows) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, fmt.Errorf("dataverse: %d webhooks are named %q; remove the extra ones in the Plug-in Registration Tool", len(rows), name)
	}
	r := rows[0]
	return &Endpoint{ID: str(r["serviceendpointid"]), Name: str(r["name"]), URL: str(r["url"]), Description: str(r["description"]),
		Contract: num(r["contract"]), AuthType: num(r["authtype"])}, nil
}

type stepRow struct {
	ID, Name, Filtering, MessageID, FilterID, Message, Entity string
	Mode, Stage, State                                        int
	AutoDelete                                                bool
}

func (c *Client) endpointSteps(ctx context.Context, endpointID string) ([]stepRow, error) {
	rows, err := c.listAll(ctx, "sdkmessageprocessingsteps", "$select=sdkmessageprocessingstepid,name,mode,stage,filteringattributes,"+
		"asyncautodelete,statecode,_sdkmessageid_value,_sdkmessagefilterid_value&$orderby=name&$filter="+queryEscape("_eventhandler_value eq "+endpointID))
	if err != nil {
		return nil, fmt.Errorf("list steps of webhook %s: %w", endpointID, err)
	}
	var out []stepRow
	filterIDs := map[string]bool{}
	for _, r := range rows {
		auto, _ := r["asyncautodelete"].(bool)
		s := stepRow{ID: str(r["sdkmessageprocessingstepid"]), Name: str(r["name"]), Filtering: str(r["filteringattributes"]),
			MessageID: str(r["_sdkmessageid_value"]), FilterID: str(r["_sdkmessagefilterid_value"]),
			Message: str(r["_sdkmessageid_value"+annFormatted]), Mode: num(r["mode"]), Stage: num(r["stage"]),
			State: num(r["statecode"]), AutoDelete: auto}
		if s.FilterID != "" {
			filterIDs[s.FilterID] = true
		}
		out = append(out, s)
	}
	if len(filterIDs) > 0 {
		var ors []string
		for id := range filterIDs {
			ors = append(ors, "sdkmessagefilterid eq "+id)
		}
		slices.Sort(ors)
		frows, err := c.listAll(ctx, "sdkmessagefilters", "$select=sdkmessagefilterid,primaryobjecttypecode&$filter="+queryEscape(strings.Join(ors, " or ")))
		if err != nil {
			return nil, fmt.Errorf("read step tables: %w", err)
		}
		ent := map[string]string{}
		for _, f := range frows {
			ent[str(f["sdkmessagefilterid"])] = str(f["primaryobjecttypecode"])
		}
		for i := range out {
			out[i].Entity = ent[out[i].FilterID]
		}
	}
	return out, nil
}

type imageRow struct {
	ID, Alias, Attributes, Property string
	Type                            int
}

func (c *Client) stepImages(ctx context.Context, steps []stepRow) (map[string][]imageRow, error) {
	out := map[string][]imageRow{}
	for start := 0; start < len(steps); start += 20 {
		var ors []string
		for _, s := range steps[start:min(start+20, len(steps))] {
			ors = append(ors, "_sdkmessageprocessingstepid_value eq "+s.ID)
		}
		rows, err := c.listAll(ctx, "sdkmessageprocessingstepimages", "$select=sdkmessageprocessingstepimageid,entityalias,imagetype,"+
			"messagepropertyname,attributes,_sdkmessageprocessingstepid_value&$orderby=entityalias&$filter="+queryEscape(strings.Join(ors, " or ")))
		if err != nil {
			return nil, fmt.Errorf("list step images: %w", err)
		}
		for _, r := range rows {
			sid := str(r["_sdkmessageprocessingstepid_value"])
			out[sid] = append(out[sid], imageRow{ID: str(r["sdkmessageprocessingstepimageid"]), Alias: str(r["entityalias"]),
				Attributes: str(r["attributes"]), Property: str(r["messagepropertyname"]), Type: num(r["imagetype"])})
		}
	}
	return out, nil
}

func (c *Client) deleteStep(ctx context.Context, st stepRow, images []imageRow) error {
	for _, img := range images {
		if err := c.deleteRow(ctx, "sdkmessageprocessingstepimages", img.ID); err != nil {
			return fmt.Errorf("delete image %s of step %q: %w", img.Alias, st.Name, err)
		}
	}
	if err := c.deleteRow(ctx, "sdkmessageprocessingsteps", st.ID); err != nil {
		return fmt.Errorf("delete step %q: %w", st.Name, err)
	}
	return nil
}
