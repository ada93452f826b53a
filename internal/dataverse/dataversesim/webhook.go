package dataversesim

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// change is one platform operation that may fire steps.
type change struct {
	m           *entityMeta
	id          string
	message     string         // Create, Update, Delete, Assign, SetState, QualifyLead
	target      map[string]any // Create/Update: the Target entity's columns
	pre, post   map[string]any // the row before/after
	user        string
	input       []jfield // message-specific InputParameters (Assign, SetState, QualifyLead)
	output      []jfield
	parent      *parentCtx
	changedCols []string // Update: the columns the request carried
}

// parentCtx describes the operation a change is part of (SetState, Assign,
// QualifyLead, a cascade); nil means the change is its own parent.
type parentCtx struct {
	message    string
	entity, id string
	input      []jfield
}

// jfield and jobj build JSON objects with a fixed key order, as WCF writes them.
type jfield struct {
	k string
	v any
}

type jobj []jfield

func (o jobj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	if err := appendJSON(&b, o, false); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// marshalNoHTML encodes like encoding/json without HTML escaping (WCF and
// the Web API do not escape <, >, &), with fast paths for the simulator's
// own shapes.
func marshalNoHTML(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := appendJSON(&b, v, false); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// marshalWCF encodes as WCF's DataContractJsonSerializer does: '/' escaped
// as \/ and control characters (newlines too) as \u00XX.
func marshalWCF(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := appendJSON(&b, v, true); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func appendJSON(b *bytes.Buffer, v any, wcf bool) error {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case string:
		appendString(b, x, wcf)
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case int:
		b.WriteString(strconv.Itoa(x))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case jobj:
		b.WriteByte('{')
		for i, f := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			appendString(b, f.k, wcf)
			b.WriteByte(':')
			if err := appendJSON(b, f.v, wcf); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case []jobj:
		return appendArray(b, x, wcf)
	case []any:
		return appendArray(b, x, wcf)
	default:
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return err
		}
		b.Write(bytes.TrimRight(buf.Bytes(), "\n"))
	}
	return nil
}

func appendArray[T any](b *bytes.Buffer, xs []T, wcf bool) error {
	b.WriteByte('[')
	for i, e := range xs {
		if i > 0 {
			b.WriteByte(',')
		}
		if err := appendJSON(b, e, wcf); err != nil {
			return err
		}
	}
	b.WriteByte(']')
	return nil
}

const hexDigits = "0123456789abcdef"

func appendString(b *bytes.Buffer, s string, wcf bool) {
	b.WriteByte('"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf && !(wcf && c == '/') {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b.WriteString(s[start:i])
			switch {
			case c == '"' || c == '\\' || c == '/':
				b.WriteByte('\\')
				b.WriteByte(c)
			case c == '\n' && !wcf:
				b.WriteString(`\n`)
			case c == '\r' && !wcf:
				b.WriteString(`\r`)
			case c == '\t' && !wcf:
				b.WriteString(`\t`)
			default: // other control characters, and all of them for WCF
				b.WriteString(`\u00`)
				b.WriteByte(hexDigits[c>>4])
				b.WriteByte(hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString(s[start:i])
			b.WriteString(`\ufffd`)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b.WriteString(s[start:i])
			b.WriteString(`\u202`)
			b.WriteByte(hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b.WriteString(s[start:])
	b.WriteByte('"')
}

// kvs renders a dictionary as WCF's [{"key":…,"value":…}] array.
func kvs(fields []jfield) []jobj {
	out := make([]jobj, 0, len(fields))
	for _, f := range fields {
		out = append(out, jobj{{"key", f.k}, {"value", f.v}})
	}
	return out
}

const contracts = ":http://schemas.microsoft.com/xrm/2011/Contracts"

func wcfDate(t time.Time) string { return fmt.Sprintf("/Date(%d)/", t.UnixMilli()) }

// wcfRef renders an EntityReference; names are filled in images only.
func (s *Server) wcfRef(r Ref, withName bool) jobj {
	var name any
	if withName {
		name = s.primaryName(r)
	}
	return jobj{{"__type", "EntityReference" + contracts}, {"Id", r.ID}, {"KeyAttributes", []any{}},
		{"LogicalName", r.LogicalName}, {"Name", name}, {"RowVersion", nil}}
}

func (s *Server) wcfValue(v any, withName bool) any {
	switch x := v.(type) {
	case Ref:
		return s.wcfRef(x, withName)
	case OptionValue:
		return jobj{{"__type", "OptionSetValue" + contracts}, {"Value", int(x)}}
	case Money:
		return jobj{{"__type", "Money" + contracts}, {"Value", float64(x)}}
	case time.Time:
		return wcfDate(x)
	case []OptionValue:
		out := make([]jobj, len(x))
		for i, o := range x {
			out[i] = jobj{{"__type", "OptionSetValue" + contracts}, {"Value", int(o)}}
		}
		return out
	}
	return v
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// entity renders a Target (typed, no names, empty FormattedValues) or an
// image entity (no __type, names and FormattedValues filled). cols limits
// the columns (nil: all).
func (s *Server) entity(m *entityMeta, id string, row map[string]any, cols []string, image bool) jobj {
	var attrs, fmts []jfield
	keys := cols
	if keys == nil {
		keys = sortedKeys(row)
	}
	for _, k := range keys {
		v, ok := row[k]
		if !ok || m.cols[k].hidden {
			continue
		}
		attrs = append(attrs, jfield{k, s.wcfValue(v, image)})
		if image {
			if f, ok := s.formatted(m, k, v); ok {
				fmts = append(fmts, jfield{k, f})
			}
		}
	}
	var rv any
	if v, ok := row["versionnumber"].(int64); ok {
		rv = fmt.Sprint(v)
	}
	o := jobj{}
	if !image {
		o = append(o, jfield{"__type", "Entity" + contracts})
	}
	return append(o, jfield{"Attributes", kvs(attrs)}, jfield{"EntityState", nil}, jfield{"FormattedValues", kvs(fmts)},
		jfield{"Id", id}, jfield{"KeyAttributes", []any{}}, jfield{"LogicalName", m.logical},
		jfield{"RelatedEntities", []any{}}, jfield{"RowVersion", rv})
}

// step is a registered step resolved against its endpoint, for delivery.
type step struct {
	id, name   string
	mode       int
	autoDelete bool
	filtering  []string
	endpoint   map[string]any
	images     []map[string]any
}

// stepsFor returns the enabled steps registered for message on entity.
func (s *Server) stepsFor(message, entity string) []step {
	var out []step
	type ranked struct {
		rank int64
		id   string
	}
	var order []ranked
	byID := map[string]step{}
	for id, st := range s.tables["sdkmessageprocessingstep"] {
		if sc, _ := st["statecode"].(OptionValue); sc != 0 {
			continue
		}
		mref, _ := st["sdkmessageid"].(Ref)
		if name, _ := s.tables["sdkmessage"][mref.ID]["name"].(string); name != message {
			continue
		}
		if fref, ok := st["sdkmessagefilterid"].(Ref); ok {
			if pot, _ := s.tables["sdkmessagefilter"][fref.ID]["primaryobjecttypecode"].(string); pot != entity {
				continue
			}
		}
		eh, _ := st["eventhandler"].(Ref)
		ep, ok := s.tables["serviceendpoint"][eh.ID]
		if !ok || eh.LogicalName != "serviceendpoint" {
			continue
		}
		if c, _ := ep["contract"].(OptionValue); c != 8 {
			continue // only webhooks are simulated
		}
		mode, _ := st["mode"].(OptionValue)
		auto, _ := st["asyncautodelete"].(bool)
		name, _ := st["name"].(string)
		var filtering []string
		if fa, _ := st["filteringattributes"].(string); fa != "" {
			for _, a := range strings.Split(fa, ",") {
				if a = strings.TrimSpace(strings.ToLower(a)); a != "" {
					filtering = append(filtering, a)
				}
			}
		}
		var images []map[string]any
		for _, img := range s.tables["sdkmessageprocessingstepimage"] {
			if r, ok := img["sdkmessageprocessingstepid"].(Ref); ok && r.ID == id {
				images = append(images, img)
			}
		}
		sort.Slice(images, func(i, j int) bool {
			a, _ := images[i]["entityalias"].(string)
			b, _ := images[j]["entityalias"].(string)
			return a < b
		})
		rank, _ := st["rank"].(int64)
		byID[id] = step{id: id, name: name, mode: int(mode), autoDelete: auto, filtering: filtering, endpoint: ep, images: images}
		order = append(order, ranked{rank, id})
	}
	sort.Slice(order, func(i, j int) bool {
		if order[i].rank != order[j].rank {
			return order[i].rank < order[j].rank
		}
		return order[i].id < order[j].id
	})
	for _, o := range order {
		out = append(out, byID[o.id])
	}
	return out
}

// fire queues a webhook delivery for every step the change triggers.
// Callers hold s.mu; in a change set, deliveries wait for the commit.
func (s *Server) fire(ch *change) {
	if s.mute > 0 {
		return
	}
	steps := s.stepsFor(ch.message, ch.m.logical)
	if len(steps) == 0 {
		return
	}
	corr := newID()
	var ds []*delivery
	for _, st := range steps {
		if ch.message == "Update" && len(st.filtering) > 0 {
			hit := false
			for _, c := range ch.changedCols {
				hit = hit || contains(st.filtering, strings.ToLower(c))
			}
			if !hit {
				continue
			}
		}
		d := s.buildDelivery(st, ch, corr)
		if st.mode == 0 {
			// Synchronous: delivered before the write completes (see write).
			s.syncPending = append(s.syncPending, d)
			continue
		}
		ds = append(ds, d)
	}
	if s.inTx {
		s.txQueue = append(s.txQueue, ds...)
		return
	}
	s.dq.push(s, ds)
}

// hasSyncSteps reports whether an enabled synchronous webhook step exists.
func (s *Server) hasSyncSteps() bool {
	for _, st := range s.tables["sdkmessageprocessingstep"] {
		mode, _ := st["mode"].(OptionValue)
		state, _ := st["statecode"].(OptionValue)
		eh, _ := st["eventhandler"].(Ref)
		if mode == 0 && state == 0 && eh.LogicalName == "serviceendpoint" {
			return true
		}
	}
	return false
}

// write runs a change as one transaction: synchronous steps are called
// before it completes, and a failed call fails and rolls back the change,
// as in Dataverse. Callers hold s.mu.
func (s *Server) write(f func() error) error {
	if s.inTx { // in a change set, which rolls back as a whole on error
		if err := f(); err != nil {
			s.syncPending = nil
			return err
		}
		return s.runSync()
	}
	if !s.hasSyncSteps() {
		return f()
	}
	s.begin()
	err := f()
	if err == nil {
		err = s.runSync()
	}
	s.syncPending = nil
	if err != nil {
		s.rollback()
		return err
	}
	s.commit()
	return nil
}

// runSync delivers the pending synchronous calls, holding the lock as the
// platform holds its transaction open.
func (s *Server) runSync() error {
	pending := s.syncPending
	s.syncPending = nil
	for _, d := range pending {
		if d.failNow != "" {
			s.stats.failed.Add(1)
			return &apiError{http.StatusBadRequest, "0x80050203", d.failNow}
		}
		status, err := 0, error(nil)
		for attempt := 0; attempt < 2; attempt++ {
			s.stats.attempts.Add(1)
			status, err = s.post(d)
			if err != nil || (status != 502 && status != 503 && status != 504) {
				break
			}
		}
		if err == nil && status >= 200 && status < 300 {
			s.stats.delivered.Add(1)
			continue
		}
		s.stats.failed.Add(1)
		msg := fmt.Sprintf("The synchronous webhook step %q failed: %s returned HTTP %d.", d.stepName, redactURL(d.url), status)
		if err != nil {
			msg = fmt.Sprintf("The synchronous webhook step %q failed: %v", d.stepName, err)
		}
		return &apiError{http.StatusBadRequest, "0x80040265", msg}
	}
	return nil
}

// objectModelStep is the OwningExtension of parent contexts.
const objectModelStep = "00000000-0000-0000-0000-00000000dead"

func (s *Server) userAAD(id string) any {
	if v, ok := s.tables["systemuser"][id]["azureactivedirectoryobjectid"].(string); ok {
		return v
	}
	return nil
}

func (s *Server) inputParameters(ch *change, image bool) []jfield {
	switch ch.message {
	case "Create", "Update":
		return []jfield{{"Target", s.entity(ch.m, ch.id, ch.target, nil, false)}}
	case "Delete":
		return []jfield{{"Target", s.wcfRef(Ref{ch.m.logical, ch.id}, false)}}
	}
	return ch.input
}

func (s *Server) buildDelivery(st step, ch *change, corr string) *delivery {
	now := s.clk.Now().UTC()
	opID := newID()
	user := ch.user
	ctx := func(message, entity, id string, input []jfield, mode, stage int, owning jobj, parent any, pre, post []jfield, output []jfield) jobj {
		var reqID any
		if mode == 0 {
			reqID = opID
		}
		return jobj{
			{"BusinessUnitId", s.buID}, {"CorrelationId", corr}, {"Depth", 1},
			{"InitiatingUserAgent", "msisync-dataversesim"},
			{"InitiatingUserAzureActiveDirectoryObjectId", s.userAAD(user)}, {"InitiatingUserId", user},
			{"InputParameters", kvs(input)}, {"IsExecutingOffline", false}, {"IsInTransaction", mode == 0},
			{"IsOfflinePlayback", false}, {"IsolationMode", 1}, {"MessageName", message}, {"Mode", mode},
			{"OperationCreatedOn", fmt.Sprintf("/Date(%d+0000)/", now.UnixMilli())}, {"OperationId", opID},
			{"OrganizationId", s.opts.OrgID}, {"OrganizationName", s.opts.OrgName},
			{"OutputParameters", kvs(output)}, {"OwningExtension", owning}, {"ParentContext", parent},
			{"PostEntityImages", kvs(post)}, {"PreEntityImages", kvs(pre)},
			{"PrimaryEntityId", id}, {"PrimaryEntityName", entity}, {"RequestId", reqID},
			{"SecondaryEntityName", "none"},
			{"SharedVariables", kvs([]jfield{{"IsAutoTransact", true}, {"DefaultsAddedFlag", true}})},
			{"Stage", stage}, {"UserAzureActiveDirectoryObjectId", s.userAAD(user)}, {"UserId", user},
		}
	}
	input := s.inputParameters(ch, false)
	// Parent context: the main operation at stage 30.
	pmsg, pent, pid, pinput := ch.message, ch.m.logical, ch.id, input
	if ch.parent != nil {
		pmsg, pent, pid, pinput = ch.parent.message, ch.parent.entity, ch.parent.id, ch.parent.input
		if pinput == nil {
			pinput = []jfield{{"Target", s.wcfRef(Ref{pent, pid}, false)}}
		}
	}
	pinput = append(append([]jfield{}, pinput...), jfield{"SuppressDuplicateDetection", false})
	parent := ctx(pmsg, pent, pid, pinput, 0, 30,
		jobj{{"Id", objectModelStep}, {"KeyAttributes", []any{}}, {"LogicalName", "sdkmessageprocessingstep"}, {"Name", "ObjectModel Implementation"}, {"RowVersion", nil}},
		nil, nil, nil, nil)
	// Images.
	var pre, post []jfield
	for _, img := range st.images {
		it, _ := img["imagetype"].(OptionValue)
		alias, _ := img["entityalias"].(string)
		var cols []string
		if a, _ := img["attributes"].(string); a != "" {
			for _, c := range strings.Split(a, ",") {
				if c = strings.TrimSpace(strings.ToLower(c)); c != "" {
					cols = append(cols, c)
				}
			}
			sort.Strings(cols)
		}
		if (it == 0 || it == 2) && ch.message != "Create" && ch.pre != nil {
			pre = append(pre, jfield{alias, s.entity(ch.m, ch.id, ch.pre, cols, true)})
		}
		if (it == 1 || it == 2) && ch.message != "Delete" && ch.post != nil {
			post = append(post, jfield{alias, s.entity(ch.m, ch.id, ch.post, cols, true)})
		}
	}
	if st.mode == 1 && ch.message != "Delete" && ch.post != nil {
		post = append(post, jfield{"AsynchronousStepPrimaryName", s.entity(ch.m, ch.id, ch.post, []string{ch.m.nameCol, ch.m.idCol}, true)})
	}
	owning := jobj{{"Id", st.id}, {"KeyAttributes", []any{}}, {"LogicalName", "sdkmessageprocessingstep"}, {"Name", st.name}, {"RowVersion", nil}}
	body := ctx(ch.message, ch.m.logical, ch.id, input, st.mode, 40, owning, parent, pre, post, ch.output)
	d := &delivery{stepID: st.id, stepName: st.name, entity: ch.m.logical, recordID: ch.id, message: ch.message,
		correlationID: corr, operationID: opID, autoDelete: st.autoDelete, header: http.Header{}}
	raw, err := marshalWCF(body)
	if err == nil && len(raw) > s.opts.TruncateOver {
		var trimmed jobj
		for _, f := range body {
			switch f.k {
			case "ParentContext", "InputParameters", "PreEntityImages", "PostEntityImages":
				continue
			}
			trimmed = append(trimmed, f)
		}
		raw, err = marshalWCF(trimmed)
		d.truncated = true
		d.header.Set("x-ms-dynamics-msg-size-exceeded", "true")
	}
	if err != nil {
		d.failNow = "serialize context: " + err.Error()
	}
	if s.opts.UpperCaseGUIDs {
		raw = guidPattern.ReplaceAllFunc(raw, bytes.ToUpper)
	}
	d.body = raw
	d.header.Set("Content-Type", "application/json")
	d.header.Set("x-ms-dynamics-organization", s.opts.Domain)
	d.header.Set("x-ms-dynamics-entity-name", ch.m.logical)
	d.header.Set("x-ms-dynamics-request-name", ch.message)
	d.header.Set("x-ms-correlation-request-id", corr)
	d.header.Set("x-request-id", newID())
	s.applyAuth(d, st.endpoint)
	return d
}

// guidPattern matches a GUID in a body (UpperCaseGUIDs).
var guidPattern = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)

type setting struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type settings struct {
	XMLName  xml.Name  `xml:"settings"`
	Settings []setting `xml:"setting"`
}

// applyAuth sets the endpoint's URL and secret on the delivery.
func (s *Server) applyAuth(d *delivery, ep map[string]any) {
	raw, _ := ep["url"].(string)
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		d.failNow = fmt.Sprintf("The webhook url %q is not valid.", raw)
		return
	}
	at, _ := ep["authtype"].(OptionValue)
	av, _ := ep["authvalue"].(string)
	q := u.Query()
	switch at {
	case 4:
		q.Set("code", av)
	case 5, 6:
		var st settings
		if err := xml.Unmarshal([]byte(av), &st); err != nil || len(st.Settings) == 0 {
			d.failNow = "The webhook call failed because of invalid http headers in authValue. Check if the authValue format, header names and values are valid for your Service Endpoint entity. ErrorCode: 0x80050203"
			return
		}
		for _, kv := range st.Settings {
			if at == 5 {
				d.header.Set(kv.Name, kv.Value)
			} else {
				q.Set(kv.Name, kv.Value)
			}
		}
	}
	u.RawQuery = q.Encode()
	d.url = u.String()
}

// delivery is one webhook call to make.
type delivery struct {
	url                                 string
	header                              http.Header
	body                                []byte
	truncated                           bool
	failNow                             string // set when the call cannot be made
	stepID, stepName, entity, recordID  string
	message, correlationID, operationID string
	autoDelete                          bool
}

type deliveryQueue struct {
	mu      sync.Mutex
	items   []*delivery
	running bool
	changed chan struct{}
}

func (q *deliveryQueue) init() { q.changed = make(chan struct{}) }

func (q *deliveryQueue) signal() {
	close(q.changed)
	q.changed = make(chan struct{})
}

func (q *deliveryQueue) push(s *Server, ds []*delivery) {
	if len(ds) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, d := range ds {
		q.items = append(q.items, d)
		if s.opts.Delivery == DeliveryDuplicated {
			q.items = append(q.items, d)
		}
	}
	if !q.running {
		q.running = true
		go s.runDeliveries()
	}
	q.signal()
}

// runDeliveries drains the queue; it exits when the queue is empty.
func (s *Server) runDeliveries() {
	q := &s.dq
	for {
		q.mu.Lock()
		batch := q.items
		q.items = nil
		if len(batch) == 0 {
			q.running = false
			q.signal()
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		if s.opts.Delivery == DeliveryShuffled {
			rand.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		}
		for _, d := range batch {
			s.deliver(d)
		}
	}
}

// WaitIdle blocks until every queued webhook has been delivered (or has
// failed), so tests can assert without sleeping.
func (s *Server) WaitIdle(ctx context.Context) error {
	q := &s.dq
	for {
		q.mu.Lock()
		if len(q.items) == 0 && !q.running {
			q.mu.Unlock()
			return nil
		}
		ch := q.changed
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("dataversesim: wait for webhook deliveries: %w", ctx.Err())
		}
	}
}

// Flush is WaitIdle.
func (s *Server) Flush(ctx context.Context) error { return s.WaitIdle(ctx) }

// deliver posts one webhook: a 60 s timeout, only the status code counts,
// one more attempt on 502/503/504; failures become Failed system jobs.
func (s *Server) deliver(d *delivery) {
	if s.webhookFault(d) {
		return
	}
	if d.failNow != "" {
		s.stats.failed.Add(1)
		s.log.Warn("dataversesim: webhook delivery failed", "step", d.stepName, "entity", d.entity, "id", d.recordID, "err", d.failNow)
		s.recordJob(d, 31, d.failNow, -2147204733)
		return
	}
	var status int
	var callErr error
	for attempt := 0; attempt < 2; attempt++ {
		s.stats.attempts.Add(1)
		status, callErr = s.post(d)
		if callErr == nil && status != 502 && status != 503 && status != 504 {
			break
		}
		if callErr != nil {
			break
		}
	}
	if callErr == nil && status >= 200 && status < 300 {
		s.stats.delivered.Add(1)
		s.log.Debug("dataversesim: webhook delivered", "step", d.stepName, "entity", d.entity, "id", d.recordID, "status", status)
		if !d.autoDelete {
			s.recordJob(d, 30, "", 0)
		}
		return
	}
	s.stats.failed.Add(1)
	msg := fmt.Sprintf("Webhook call to %s failed: the HTTP status code %d (%s) was returned.", redactURL(d.url), status, http.StatusText(status))
	if callErr != nil {
		msg = fmt.Sprintf("Webhook call to %s failed: %v", redactURL(d.url), callErr)
	}
	s.log.Warn("dataversesim: webhook delivery failed", "step", d.stepName, "entity", d.entity, "id", d.recordID, "err", msg)
	s.recordJob(d, 31, msg, -2147220970)
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid url)"
	}
	u.RawQuery = ""
	return u.String()
}

func (s *Server) post(d *delivery) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(d.body))
	if err != nil {
		return 0, err
	}
	req.Header = d.header.Clone()
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// recordJob writes the system job (asyncoperation) of a delivery.
func (s *Server) recordJob(d *delivery, status int, msg string, code int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clk.Now().UTC().Truncate(time.Second)
	row := map[string]any{"asyncoperationid": d.operationID, "name": d.stepName, "operationtype": OptionValue(1),
		"statecode": OptionValue(3), "statuscode": OptionValue(status), "createdon": now, "startedon": now, "completedon": now,
		"modifiedon": now, "owningextensionid": Ref{"sdkmessageprocessingstep", d.stepID},
		"primaryentitytype": d.entity, "regardingobjectid": Ref{d.entity, d.recordID}, "correlationid": d.correlationID,
		"depth": int64(1), "messagename": d.message, "versionnumber": s.nextVersion()}
	if msg != "" {
		row["message"], row["friendlymessage"], row["errorcode"] = msg, msg, code
	}
	s.tables["asyncoperation"][d.operationID] = row
}

type statsCounters struct {
	requests, throttled, delivered, failed, attempts atomic.Int64
}

// Stats counts what the simulator served and delivered.
type Stats struct {
	Requests  int64 // Web API requests accepted (a $batch counts once)
	Throttled int64 // requests answered 429
	Delivered int64 // webhooks answered 2xx
	Failed    int64 // webhooks that became Failed system jobs
	Attempts  int64 // webhook POSTs made, re-sends included
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{Requests: s.stats.requests.Load(), Throttled: s.stats.throttled.Load(),
		Delivered: s.stats.delivered.Load(), Failed: s.stats.failed.Load(), Attempts: s.stats.attempts.Load()}
}
