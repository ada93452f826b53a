// Package dataversesim is an in-process simulator of the Dataverse Web API
// and of Dataverse webhooks, faithful to the behaviours msisync depends on
// (see shared/reference/dataverse.md §8): entity sets with OData query
// options and paging, conditional PATCH, $batch, service protection limits,
// the plug-in registration tables, and webhook delivery of
// RemoteExecutionContext JSON for every registered step.
package dataversesim

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/msisync/msisync/internal/clock"
)

// Delivery orders for webhook calls.
const (
	DeliveryInOrder    = "inorder"
	DeliveryShuffled   = "shuffled"
	DeliveryDuplicated = "duplicated"
)

// Options configure a simulator.
type Options struct {
	// OrgName is the unique organization name sent as OrganizationName
	// (default "unq" + 29 hex digits); OrgID the organization id; Domain
	// the host sent in x-ms-dynamics-organization.
	OrgName, OrgID, Domain string
	Clock                  clock.Clock
	Logger                 *slog.Logger
	// Token is a static bearer the Web API accepts. TenantID, ClientID and
	// ClientSecret configure the simulated Entra ID token endpoint
	// (/{tenant}/oauth2/v2.0/token, client credentials, scope
	// <url>/.default) whose tokens last TokenLifetime (default 1 h, on
	// Clock) and are valid only for the host they were asked for. With
	// neither Token nor ClientID any bearer is accepted; a missing
	// Authorization header is always 401.
	Token                            string
	TenantID, ClientID, ClientSecret string
	TokenLifetime                    time.Duration
	// Service protection: RequestsPerWindow requests per Window per caller
	// (default 6000 per 300 s; negative disables) and MaxConcurrent
	// requests in flight (default 52; negative disables).
	RequestsPerWindow int
	Window            time.Duration
	MaxConcurrent     int
	// ExecutionTimePerWindow is the execution time a caller may use per
	// Window (default 1,200,000 ms; negative disables). Each request is
	// charged its real handling time plus ExecutionTimePerRequest, which
	// tests set to make the limit bite deterministically.
	ExecutionTimePerWindow  time.Duration
	ExecutionTimePerRequest time.Duration
	// TruncateOver is the payload size above which a webhook body loses
	// ParentContext, InputParameters and images (default 256 KB).
	TruncateOver int
	// DeliverConnectionTwice fires steps for both rows of a connection.
	DeliverConnectionTwice bool
	// SplitStateUpdates makes a write of statecode with other columns fire
	// Update steps twice (columns, then state), as Dataverse may.
	SplitStateUpdates bool
	// Delivery is DeliveryInOrder (default), DeliveryShuffled or DeliveryDuplicated.
	Delivery string
	// UpperCaseGUIDs writes every GUID of a webhook body in upper case.
	// Unconfirmed whether Dataverse ever does (GUIDs are case-insensitive);
	// the switch lets tests prove that receivers do not care.
	UpperCaseGUIDs bool
	// HTTPClient posts webhooks (default: a client with the 60 s Dataverse timeout).
	HTTPClient *http.Client
	// AppUserID is the systemuser the Web API caller acts as: the UserId of
	// changes made through the Web API and the default owner of rows it creates.
	AppUserID string
	// UserID is the systemuser the Go methods (Create, Update...) act as, a
	// human user in the story (default: a seeded "Sam Seller").
	UserID string
	// Seed is applied by ListenAndServe before serving (zero: no rows).
	Seed SeedOptions
	// WebhookFaults and Untracked set the switches of SetWebhookFaults and
	// SetChangeTracking from the start (msisync sim dataverse flags).
	WebhookFaults WebhookFaults
	Untracked     []string
}

// Server is the simulator. It is an http.Handler serving /api/data/v9.2/.
type Server struct {
	opts   Options
	clk    clock.Clock
	log    *slog.Logger
	client *http.Client

	mu      sync.Mutex
	tables  map[string]map[string]map[string]any // entity → id → columns
	extra   map[string]map[string]bool           // entity → columns not in the schema that were written
	version int64
	index   map[string][]string   // entity → sorted ids, rebuilt lazily after inserts/deletes
	deleted map[string][]deletion // entity → deleted rows, for change tracking
	inTx    bool
	mute    int // >0: changes fire no webhooks
	undo    []func()
	txQueue []*delivery
	// syncPending are synchronous step calls of the current write.
	syncPending []*delivery

	buID, currencyID string

	throttle throttle
	tokens   tokens
	dq       deliveryQueue
	stats    statsCounters
	sw       switches // change tracking and webhook fault switches (changetracking.go, faults.go)
}

// New returns a simulator with the schema, the SDK message tables, the
// application user and a default user in place.
func New(o Options) *Server {
	if o.Clock == nil {
		o.Clock = clock.System{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.OrgName == "" {
		o.OrgName = "unq" + randHex(29)
	}
	if o.OrgID == "" {
		o.OrgID = newID()
	}
	if o.Domain == "" {
		o.Domain = "msisyncsim.crm.dynamics.com"
	}
	if o.RequestsPerWindow == 0 {
		o.RequestsPerWindow = 6000
	}
	if o.Window == 0 {
		o.Window = 300 * time.Second
	}
	if o.MaxConcurrent == 0 {
		o.MaxConcurrent = 52
	}
	if o.ExecutionTimePerWindow == 0 {
		o.ExecutionTimePerWindow = 1200 * time.Second
	}
	if o.TruncateOver == 0 {
		o.TruncateOver = 256 * 1024
	}
	if o.Delivery == "" {
		o.Delivery = DeliveryInOrder
	}
	if o.AppUserID == "" {
		o.AppUserID = newID()
	}
	if o.UserID == "" {
		o.UserID = newID()
	}
	o.AppUserID, o.UserID, o.OrgID = normID(o.AppUserID), normID(o.UserID), normID(o.OrgID)
	s := &Server{opts: o, clk: o.Clock, log: o.Logger, client: o.HTTPClient,
		tables: map[string]map[string]map[string]any{}, extra: map[string]map[string]bool{}, index: map[string][]string{},
		deleted: map[string][]deletion{},
		buID:    newID(), currencyID: newID()}
	if s.client == nil {
		s.client = &http.Client{Timeout: 60 * time.Second}
	}
	for name := range entities {
		s.tables[name] = map[string]map[string]any{}
		s.extra[name] = map[string]bool{}
	}
	s.throttle.init()
	s.dq.init()
	s.seedSystem()
	s.applySwitches(o)
	return s
}

func randHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// sdkMessages and the entities each is registered for (sdkmessagefilters).
var sdkMessages = map[string][]string{
	"Create":                {"systemuser", "account", "contact", "lead", "opportunity", "connection", "connectionrole"},
	"Update":                {"systemuser", "account", "contact", "lead", "opportunity", "connection", "connectionrole"},
	"Delete":                {"systemuser", "account", "contact", "lead", "opportunity", "connection", "connectionrole"},
	"Assign":                {"account", "contact", "lead", "opportunity", "connection"},
	"SetState":              {"account", "contact", "lead", "opportunity", "connection"},
	"SetStateDynamicEntity": {"account", "contact", "lead", "opportunity", "connection"},
	"QualifyLead":           {"lead"},
	"Merge":                 {"account", "contact", "lead"},
	"Retrieve":              {"account", "contact", "lead", "opportunity"},
}

func (s *Server) seedSystem() {
	now := s.clk.Now().UTC().Truncate(time.Second)
	names := make([]string, 0, len(sdkMessages))
	for n := range sdkMessages {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		mid := newID()
		s.tables["sdkmessage"][mid] = map[string]any{"sdkmessageid": mid, "name": name, "categoryname": "Sdk", "isprivate": false,
			"createdon": now, "modifiedon": now, "versionnumber": s.nextVersion()}
		for _, ent := range sdkMessages[name] {
			fid := newID()
			s.tables["sdkmessagefilter"][fid] = map[string]any{"sdkmessagefilterid": fid, "name": name + " " + ent,
				"sdkmessageid": Ref{"sdkmessage", mid}, "primaryobjecttypecode": ent, "secondaryobjecttypecode": "none",
				"iscustomprocessingstepallowed": true, "isvisible": true, "createdon": now, "modifiedon": now, "versionnumber": s.nextVersion()}
		}
	}
	sys := func(id, first, last, email string, app bool) {
		r := map[string]any{"systemuserid": id, "firstname": first, "lastname": last, "fullname": first + " " + last,
			"internalemailaddress": email, "domainname": email, "isdisabled": false, "businessunitid": Ref{"businessunit", s.buID},
			"azureactivedirectoryobjectid": newID(), "createdon": now, "modifiedon": now, "versionnumber": s.nextVersion()}
		if app {
			r["applicationid"] = newID()
		}
		s.tables["systemuser"][id] = r
	}
	sys(s.opts.AppUserID, "# msisync", "application", "msisync-app@"+s.opts.Domain, true)
	sys(s.opts.UserID, "Sam", "Seller", "sam.seller@example.com", false)
	for _, role := range []struct {
		name string
		cat  int
	}{{"Stakeholder", 1000}, {"Champion", 1000}, {"Decision Maker", 1000}, {"Economic Buyer", 1000}, {"End User", 1000},
		{"Influencer", 1000}, {"Technical Buyer", 1000}, {"Account Manager", 1001}, {"Territory Manager", 1001}} {
		id := newID()
		s.tables["connectionrole"][id] = map[string]any{"connectionroleid": id, "name": role.name, "category": OptionValue(role.cat),
			"statecode": OptionValue(0), "statuscode": OptionValue(1), "createdon": now, "modifiedon": now, "versionnumber": s.nextVersion()}
	}
}

func (s *Server) nextVersion() int64 { s.version++; return s.version }

// AppUserID is the systemuser id of the Web API caller.
func (s *Server) AppUserID() string { return s.opts.AppUserID }

// UserID is the systemuser id the Go methods act as.
func (s *Server) UserID() string { return s.opts.UserID }

// OrgID is the organization id sent in webhooks.
func (s *Server) OrgID() string { return s.opts.OrgID }

// OrgName is the unique organization name sent in webhooks.
func (s *Server) OrgName() string { return s.opts.OrgName }

// apiError is an error with the HTTP status and Dataverse error code the
// Web API answers with.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errBad(format string, a ...any) *apiError {
	return &apiError{http.StatusBadRequest, "0x80040203", fmt.Sprintf(format, a...)}
}

func errNotFound(entity, id string) *apiError {
	return &apiError{http.StatusNotFound, "0x80040217", fmt.Sprintf("%s With Id = %s Does Not Exist", entity, id)}
}

// ---- transactions (change sets) ----

func (s *Server) begin() { s.inTx = true; s.undo = nil; s.txQueue = nil }

func (s *Server) commit() {
	s.inTx = false
	s.undo = nil
	q := s.txQueue
	s.txQueue = nil
	s.dq.push(s, q)
}

func (s *Server) rollback() {
	for i := len(s.undo) - 1; i >= 0; i-- {
		s.undo[i]()
	}
	s.inTx, s.undo, s.txQueue = false, nil, nil
}

func (s *Server) journal(f func()) {
	if s.inTx {
		s.undo = append(s.undo, f)
	}
}

// putRow stores a row, journalling its previous state.
func (s *Server) putRow(entity, id string, row map[string]any) {
	t := s.tables[entity]
	old, had := t[id]
	s.journal(func() {
		if had {
			t[id] = old
		} else {
			delete(t, id)
			delete(s.index, entity)
		}
	})
	if !had {
		delete(s.index, entity)
	}
	t[id] = row
}

// sortedIDs returns the entity's ids in primary-key order (the default
// order of lists), cached until a row is added or removed.
func (s *Server) sortedIDs(entity string) []string {
	if ids, ok := s.index[entity]; ok {
		return ids
	}
	ids := make([]string, 0, len(s.tables[entity]))
	for id := range s.tables[entity] {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	s.index[entity] = ids
	return ids
}

func (s *Server) removeRow(entity, id string) {
	t := s.tables[entity]
	old, had := t[id]
	if !had {
		return
	}
	log := s.deleted[entity]
	s.journal(func() { t[id] = old; delete(s.index, entity); s.deleted[entity] = log })
	delete(t, id)
	delete(s.index, entity)
	s.deleted[entity] = append(log, deletion{id: id, version: s.nextVersion()})
}

// deletion is an entry of the change-tracking log of deleted rows.
type deletion struct {
	id      string
	version int64
}

func copyRow(r map[string]any) map[string]any {
	c := make(map[string]any, len(r))
	for k, v := range r {
		c[k] = v
	}
	return c
}

// primaryName is the display name of a referenced row ("" when unknown).
func (s *Server) primaryName(r Ref) string {
	m, ok := entities[r.LogicalName]
	if !ok {
		switch r.LogicalName {
		case "businessunit":
			return "msisync-sim"
		case "transactioncurrency":
			return "US Dollar"
		}
		return ""
	}
	if row, ok := s.tables[r.LogicalName][r.ID]; ok {
		if n, ok := row[m.nameCol].(string); ok {
			return n
		}
	}
	return ""
}

// ---- the data operations; callers hold s.mu ----

// readOnly columns are computed by the platform; writes to them are ignored.
var readOnly = map[string]bool{"createdon": true, "modifiedon": true, "createdby": true, "modifiedby": true,
	"createdonbehalfby": true, "modifiedonbehalfby": true, "versionnumber": true, "fullname": true, "yomifullname": true,
	"owninguser": true, "owningteam": true, "owningbusinessunit": true, "address1_composite": true,
	"estimatedvalue_base": true, "revenue_base": true, "ismaster": true, "relatedconnectionid": true}

// checkRefs verifies lookups point to existing rows.
func (s *Server) checkRefs(m *entityMeta, attrs map[string]any) error {
	for _, v := range attrs {
		r, ok := v.(Ref)
		if !ok {
			continue
		}
		if t, stored := s.tables[r.LogicalName]; stored {
			if _, ok := t[r.ID]; !ok {
				return errNotFound(r.LogicalName, r.ID)
			}
		}
	}
	return nil
}

// applyState fills and checks statecode/statuscode.
func applyState(m *entityMeta, row, attrs map[string]any) error {
	if m.states == nil {
		return nil
	}
	sc, hasState := attrs["statecode"].(OptionValue)
	st, hasStatus := attrs["statuscode"].(OptionValue)
	if !hasState && !hasStatus {
		return nil
	}
	if !hasState {
		sc, _ = row["statecode"].(OptionValue)
	}
	allowed, ok := m.states[int(sc)]
	if !ok {
		return errBad("%d is not a valid statecode for %s", sc, m.logical)
	}
	if !hasStatus {
		st = OptionValue(allowed[0])
		attrs["statuscode"] = st
	} else {
		valid := false
		for _, a := range allowed {
			valid = valid || a == int(st)
		}
		if !valid {
			return &apiError{http.StatusBadRequest, "0x8004431a", fmt.Sprintf("%d is not a valid status code for state code %s.StateCode %d on %s", st, m.logical, sc, m.logical)}
		}
	}
	attrs["statecode"] = sc
	return nil
}

func computeNames(m *entityMeta, row map[string]any) []string {
	if _, ok := m.cols["fullname"]; !ok || m.logical == "connection" {
		return nil
	}
	first, _ := row["firstname"].(string)
	last, _ := row["lastname"].(string)
	row["fullname"] = strings.TrimSpace(first + " " + last)
	if _, ok := m.cols["yomifullname"]; ok {
		row["yomifullname"] = row["fullname"]
		return []string{"fullname", "yomifullname"}
	}
	return []string{"fullname"}
}

// createChecked is create for callers outside the simulator: platform
// columns are dropped and lookups must resolve.
func (s *Server) createChecked(m *entityMeta, attrs map[string]any, user string, parent *parentCtx) (string, error) {
	clean := map[string]any{}
	for k, v := range attrs {
		if readOnly[k] {
			continue
		}
		clean[k] = v
	}
	if err := s.checkRefs(m, clean); err != nil {
		return "", err
	}
	if m.logical == "connection" {
		return s.createConnection(clean, user, parent)
	}
	return s.create(m, clean, user, parent)
}

// create inserts a row; attrs are typed and trusted. It returns the new id.
func (s *Server) create(m *entityMeta, attrs map[string]any, user string, parent *parentCtx) (string, error) {
	id, _ := attrs[m.idCol].(string)
	if id == "" {
		id = newID()
	}
	id = normID(id)
	if _, exists := s.tables[m.logical][id]; exists {
		return "", &apiError{http.StatusPreconditionFailed, "0x80040237", "A record with matching key values already exists."}
	}
	now := s.clk.Now().UTC().Truncate(time.Second)
	row := make(map[string]any, len(attrs)+16)
	for k, v := range attrs {
		row[k] = v
	}
	row[m.idCol] = id
	if m.states != nil {
		if _, ok := row["statecode"]; !ok {
			row["statecode"] = OptionValue(0)
		}
		if err := applyState(m, map[string]any{"statecode": OptionValue(0)}, row); err != nil {
			return "", err
		}
	}
	if !m.system {
		userRef := Ref{"systemuser", user}
		row["createdon"], row["modifiedon"] = now, now
		row["createdby"], row["modifiedby"] = userRef, userRef
		row["createdonbehalfby"], row["modifiedonbehalfby"] = nil, nil
	} else {
		if _, ok := row["createdon"]; !ok {
			row["createdon"] = now
		}
		row["modifiedon"] = now
	}
	if m.hasOwner {
		owner, ok := row["ownerid"].(Ref)
		if !ok {
			owner = Ref{"systemuser", user}
			row["ownerid"] = owner
		}
		if owner.LogicalName == "systemuser" {
			row["owninguser"], row["owningteam"] = owner, nil
		} else {
			row["owninguser"], row["owningteam"] = nil, owner
		}
		row["owningbusinessunit"] = Ref{"businessunit", s.buID}
	}
	if _, ok := m.cols["transactioncurrencyid"]; ok {
		if _, set := row["transactioncurrencyid"]; !set {
			row["transactioncurrencyid"] = Ref{"transactioncurrency", s.currencyID}
			row["exchangerate"] = 1.0
		}
	}
	for _, c := range []string{"estimatedvalue", "revenue"} {
		if v, ok := row[c].(Money); ok {
			row[c+"_base"] = v
		}
	}
	computeNames(m, row)
	row["versionnumber"] = s.nextVersion()
	s.noteExtra(m, row)
	s.putRow(m.logical, id, row)
	if !m.system && s.mute == 0 {
		target := copyRow(row)
		delete(target, "versionnumber")
		s.fire(&change{m: m, id: id, message: "Create", target: target, post: row, user: user, parent: parent,
			output: []jfield{{"id", id}}})
	}
	return id, nil
}

func (s *Server) noteExtra(m *entityMeta, attrs map[string]any) {
	for k := range attrs {
		if _, ok := m.cols[k]; !ok {
			s.extra[m.logical][k] = true
		}
	}
}

// update changes a row. message is the SDK message the change belongs to
// (Update, or the Update half of Assign/SetState), parent its parent context.
func (s *Server) update(m *entityMeta, id string, attrs map[string]any, user string, parent *parentCtx) error {
	old, ok := s.tables[m.logical][id]
	if !ok {
		return errNotFound(m.logical, id)
	}
	sent := map[string]any{}
	for k, v := range attrs {
		if k == m.idCol || readOnly[k] {
			continue
		}
		sent[k] = v
	}
	if err := applyState(m, old, sent); err != nil {
		return err
	}
	if err := s.checkRefs(m, sent); err != nil {
		return err
	}
	row := copyRow(old)
	for k, v := range sent {
		row[k] = v
	}
	target := copyRow(sent)
	target[m.idCol] = id // Update targets carry the primary key
	if m.hasOwner {
		if owner, ok := sent["ownerid"].(Ref); ok {
			if owner.LogicalName == "systemuser" {
				row["owninguser"], row["owningteam"] = owner, nil
			} else {
				row["owninguser"], row["owningteam"] = nil, owner
			}
			target["owninguser"], target["owningteam"] = row["owninguser"], row["owningteam"]
		}
	}
	for _, c := range []string{"estimatedvalue", "revenue"} {
		if v, ok := sent[c]; ok {
			row[c+"_base"] = v
			target[c+"_base"] = v
		}
	}
	_, fn := sent["firstname"]
	_, ln := sent["lastname"]
	if fn || ln {
		for _, c := range computeNames(m, row) {
			target[c] = row[c]
		}
	}
	now := s.clk.Now().UTC().Truncate(time.Second)
	row["modifiedon"] = now
	target["modifiedon"] = now
	if !m.system {
		row["modifiedby"], row["modifiedonbehalfby"] = Ref{"systemuser", user}, nil
		target["modifiedby"], target["modifiedonbehalfby"] = row["modifiedby"], nil
	}
	row["versionnumber"] = s.nextVersion()
	s.noteExtra(m, sent)
	s.putRow(m.logical, id, row)
	if !m.system {
		s.fireUpdate(m, id, target, sent, old, row, user, parent)
	}
	if m.logical == "connection" {
		s.mirrorConnection(id, sent, user)
	}
	return nil
}

// fireUpdate fires the Update steps of a change. With SplitStateUpdates a
// write that sets the state along with other columns fires twice, as the
// platform splits it (special-update-operation-behavior.md): once for the
// other columns, once for the state, whose parent context is SetState.
func (s *Server) fireUpdate(m *entityMeta, id string, target, sent, old, row map[string]any, user string, parent *parentCtx) {
	_, hasState := sent["statecode"]
	if s.opts.SplitStateUpdates && hasState && len(sent) > 2 && parent == nil {
		other, state := map[string]any{}, map[string]any{}
		var otherCols, stateCols []string
		for k, v := range target {
			switch k {
			case "statecode", "statuscode":
				state[k] = v
				stateCols = append(stateCols, k)
			case "modifiedon", "modifiedby", "modifiedonbehalfby", m.idCol:
				other[k], state[k] = v, v
			default:
				other[k] = v
				if _, ok := sent[k]; ok {
					otherCols = append(otherCols, k)
				}
			}
		}
		s.fire(&change{m: m, id: id, message: "Update", target: other, pre: old, post: row, user: user, changedCols: otherCols})
		input := []jfield{{"EntityMoniker", s.wcfRef(Ref{m.logical, id}, false)}, {"State", s.wcfValue(row["statecode"], false)}, {"Status", s.wcfValue(row["statuscode"], false)}}
		s.fire(&change{m: m, id: id, message: "Update", target: state, pre: old, post: row, user: user, changedCols: stateCols,
			parent: &parentCtx{message: "SetState", entity: m.logical, id: id, input: input}})
		return
	}
	changed := make([]string, 0, len(sent))
	for k := range sent {
		changed = append(changed, k)
	}
	s.fire(&change{m: m, id: id, message: "Update", target: target, pre: old, post: row, user: user, parent: parent, changedCols: changed})
}

// mirrorConnection keeps the reciprocal row of a connection in step.
func (s *Server) mirrorConnection(id string, sent map[string]any, user string) {
	row := s.tables["connection"][id]
	rel, ok := row["relatedconnectionid"].(Ref)
	if !ok {
		return
	}
	other, ok := s.tables["connection"][rel.ID]
	if !ok {
		return
	}
	mirrored := map[string]any{}
	for k, v := range sent {
		switch k {
		case "record1id":
			k = "record2id"
		case "record2id":
			k = "record1id"
		case "record1roleid":
			k = "record2roleid"
		case "record2roleid":
			k = "record1roleid"
		case "record1objecttypecode":
			k = "record2objecttypecode"
		case "record2objecttypecode":
			k = "record1objecttypecode"
		}
		if !valueEqual(other[k], v) {
			mirrored[k] = v
		}
	}
	if len(mirrored) == 0 {
		return
	}
	next := copyRow(other)
	for k, v := range mirrored {
		next[k] = v
	}
	next["modifiedon"] = row["modifiedon"]
	next["modifiedby"] = row["modifiedby"]
	next["versionnumber"] = s.nextVersion()
	s.putRow("connection", rel.ID, next)
	if s.opts.DeliverConnectionTwice {
		target := copyRow(mirrored)
		target["modifiedon"], target["modifiedby"], target["modifiedonbehalfby"] = next["modifiedon"], next["modifiedby"], nil
		changed := make([]string, 0, len(mirrored))
		for k := range mirrored {
			changed = append(changed, k)
		}
		s.fire(&change{m: entities["connection"], id: rel.ID, message: "Update", target: target, pre: other, post: next, user: user, changedCols: changed})
	}
}

// remove deletes a row (and, for connections, its reciprocal; for records,
// the connections that point at them).
func (s *Server) remove(m *entityMeta, id, user string, parent *parentCtx) error {
	old, ok := s.tables[m.logical][id]
	if !ok {
		return errNotFound(m.logical, id)
	}
	switch m.logical {
	case "serviceendpoint":
		for _, st := range s.tables["sdkmessageprocessingstep"] {
			if r, ok := st["eventhandler"].(Ref); ok && r.ID == id {
				return errBad("The object you tried to delete is associated with another object and cannot be deleted: serviceendpoint %s has step %s", id, st["sdkmessageprocessingstepid"])
			}
		}
	case "sdkmessageprocessingstep":
		for imgID, img := range s.tables["sdkmessageprocessingstepimage"] {
			if r, ok := img["sdkmessageprocessingstepid"].(Ref); ok && r.ID == id {
				s.removeRow("sdkmessageprocessingstepimage", imgID)
			}
		}
	}
	s.removeRow(m.logical, id)
	if !m.system {
		s.fire(&change{m: m, id: id, message: "Delete", pre: old, user: user, parent: parent})
	}
	if m.logical == "connection" {
		if rel, ok := old["relatedconnectionid"].(Ref); ok {
			if other, ok := s.tables["connection"][rel.ID]; ok {
				s.removeRow("connection", rel.ID)
				if s.opts.DeliverConnectionTwice {
					s.fire(&change{m: m, id: rel.ID, message: "Delete", pre: other, user: user, parent: parent})
				}
			}
		}
		return nil
	}
	if !m.system {
		// Cascade: connections to a deleted record go with it.
		var doomed []string
		for cid, c := range s.tables["connection"] {
			if ismaster, _ := c["ismaster"].(bool); !ismaster {
				continue
			}
			r1, _ := c["record1id"].(Ref)
			r2, _ := c["record2id"].(Ref)
			if r1.ID == id || r2.ID == id {
				doomed = append(doomed, cid)
			}
		}
		sort.Strings(doomed)
		for _, cid := range doomed {
			_ = s.remove(entities["connection"], cid, user, &parentCtx{message: "Delete", entity: m.logical, id: id})
		}
	}
	return nil
}

// createConnection stores the forward row and its reciprocal.
func (s *Server) createConnection(attrs map[string]any, user string, parent *parentCtx) (string, error) {
	m := entities["connection"]
	r1, ok1 := attrs["record1id"].(Ref)
	r2, ok2 := attrs["record2id"].(Ref)
	if !ok1 || !ok2 {
		return "", errBad("record1id and record2id are required for a connection")
	}
	fwd := copyRow(attrs)
	if _, ok := fwd["record1objecttypecode"]; !ok {
		fwd["record1objecttypecode"] = OptionValue(entities[r1.LogicalName].typeCode)
	}
	if _, ok := fwd["record2objecttypecode"]; !ok {
		fwd["record2objecttypecode"] = OptionValue(entities[r2.LogicalName].typeCode)
	}
	if _, ok := fwd["name"]; !ok {
		fwd["name"] = s.primaryName(r2)
	}
	id, _ := fwd["connectionid"].(string)
	if id == "" {
		id = newID()
	}
	id = normID(id)
	relID := newID()
	rev := map[string]any{"connectionid": relID, "record1id": r2, "record2id": r1,
		"record1objecttypecode": fwd["record2objecttypecode"], "record2objecttypecode": fwd["record1objecttypecode"],
		"name": s.primaryName(r1)}
	for _, k := range []string{"effectivestart", "effectiveend", "description", "ownerid", "statecode", "statuscode"} {
		if v, ok := fwd[k]; ok {
			rev[k] = v
		}
	}
	if v, ok := fwd["record1roleid"]; ok {
		rev["record2roleid"] = v
	}
	if v, ok := fwd["record2roleid"]; ok {
		rev["record1roleid"] = v
	}
	fwd["connectionid"] = id
	fwd["ismaster"], fwd["relatedconnectionid"] = true, Ref{"connection", relID}
	rev["ismaster"], rev["relatedconnectionid"] = false, Ref{"connection", id}
	if _, err := s.create(m, fwd, user, parent); err != nil {
		return "", err
	}
	if _, err := s.createQuiet(m, rev, user, parent, !s.opts.DeliverConnectionTwice); err != nil {
		return "", err
	}
	return id, nil
}

// createQuiet is create with webhooks optionally suppressed (the reciprocal
// row of a connection when the simulator delivers connections once).
func (s *Server) createQuiet(m *entityMeta, attrs map[string]any, user string, parent *parentCtx, quiet bool) (string, error) {
	if quiet {
		s.mute++
		defer func() { s.mute-- }()
	}
	return s.create(m, attrs, user, parent)
}
