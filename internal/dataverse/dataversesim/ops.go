package dataversesim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"time"
)

// These methods change records as a user working in Dynamics would (as
// Options.UserID), firing the registered steps like Web API changes do.

func (s *Server) typed(entity string, attrs map[string]any) (*entityMeta, map[string]any, error) {
	m, ok := entities[entity]
	if !ok {
		return nil, nil, fmt.Errorf("unknown entity %q", entity)
	}
	out := make(map[string]any, len(attrs))
	for k, v := range attrs {
		tv, err := coerce(m, k, v)
		if err != nil {
			return nil, nil, err
		}
		out[k] = tv
	}
	return m, out, nil
}

// Create creates a row and returns its id. Values are Go values: string,
// int, float64, bool, time.Time, Ref, OptionValue, Money or nil; a GUID
// string works for single-target lookups.
func (s *Server) Create(entity string, attrs map[string]any) (string, error) {
	m, typed, err := s.typed(entity, attrs)
	if err != nil {
		return "", fmt.Errorf("dataversesim: create %s: %w", entity, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if aerr := s.validateSystem(m, typed, nil); aerr != nil {
		return "", fmt.Errorf("dataversesim: create %s: %w", entity, aerr)
	}
	var id string
	err = s.write(func() (err error) { id, err = s.createChecked(m, typed, s.opts.UserID, nil); return err })
	if err != nil {
		return "", fmt.Errorf("dataversesim: create %s: %w", entity, err)
	}
	return id, nil
}

// Update changes columns of a row.
func (s *Server) Update(entity, id string, attrs map[string]any) error {
	m, typed, err := s.typed(entity, attrs)
	if err != nil {
		return fmt.Errorf("dataversesim: update %s %s: %w", entity, id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.write(func() error { return s.update(m, normID(id), typed, s.opts.UserID, nil) }); err != nil {
		return fmt.Errorf("dataversesim: update %s %s: %w", entity, id, err)
	}
	return nil
}

// Delete deletes a row (connections: both rows; records: their connections).
func (s *Server) Delete(entity, id string) error {
	m, ok := entities[entity]
	if !ok {
		return fmt.Errorf("dataversesim: delete: unknown entity %q", entity)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.write(func() error { return s.remove(m, normID(id), s.opts.UserID, nil) }); err != nil {
		return fmt.Errorf("dataversesim: delete %s %s: %w", entity, id, err)
	}
	return nil
}

// Assign gives a row to another systemuser: an Assign message plus the
// Update of ownerid it causes.
func (s *Server) Assign(entity, id, ownerID string) error {
	m, ok := entities[entity]
	if !ok || !m.hasOwner {
		return fmt.Errorf("dataversesim: assign: %q is not an owned entity", entity)
	}
	id, ownerID = normID(id), normID(ownerID)
	s.mu.Lock()
	defer s.mu.Unlock()
	pre, ok := s.tables[entity][id]
	if !ok {
		return fmt.Errorf("dataversesim: assign %s %s: %w", entity, id, errNotFound(entity, id))
	}
	owner := Ref{"systemuser", ownerID}
	input := []jfield{{"Target", s.wcfRef(Ref{entity, id}, false)}, {"Assignee", s.wcfRef(owner, false)}}
	parent := &parentCtx{message: "Assign", entity: entity, id: id, input: input}
	err := s.write(func() error {
		if err := s.update(m, id, map[string]any{"ownerid": owner}, s.opts.UserID, parent); err != nil {
			return err
		}
		s.fire(&change{m: m, id: id, message: "Assign", pre: pre, post: s.tables[entity][id], user: s.opts.UserID, input: input})
		return nil
	})
	if err != nil {
		return fmt.Errorf("dataversesim: assign %s %s: %w", entity, id, err)
	}
	return nil
}

// SetState changes statecode/statuscode: a SetState message, which Update
// steps see as an Update whose parent context is SetState.
func (s *Server) SetState(entity, id string, state, status int) error {
	m, ok := entities[entity]
	if !ok || m.states == nil {
		return fmt.Errorf("dataversesim: setstate: %q has no state", entity)
	}
	id = normID(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	pre, ok := s.tables[entity][id]
	if !ok {
		return fmt.Errorf("dataversesim: setstate %s %s: %w", entity, id, errNotFound(entity, id))
	}
	input := []jfield{{"EntityMoniker", s.wcfRef(Ref{entity, id}, false)},
		{"State", s.wcfValue(OptionValue(state), false)}, {"Status", s.wcfValue(OptionValue(status), false)}}
	parent := &parentCtx{message: "SetState", entity: entity, id: id, input: input}
	err := s.write(func() error {
		if err := s.update(m, id, map[string]any{"statecode": OptionValue(state), "statuscode": OptionValue(status)}, s.opts.UserID, parent); err != nil {
			return err
		}
		s.fire(&change{m: m, id: id, message: "SetState", pre: pre, post: s.tables[entity][id], user: s.opts.UserID, input: input})
		return nil
	})
	if err != nil {
		return fmt.Errorf("dataversesim: setstate %s %s: %w", entity, id, err)
	}
	return nil
}

// QualifyLead qualifies a lead into a new account, contact and opportunity
// (Create events whose parent context is QualifyLead), then marks the lead
// Qualified.
func (s *Server) QualifyLead(leadID string) (accountID, contactID, oppID string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	err = s.write(func() (err error) {
		accountID, contactID, oppID, err = s.qualifyLead(normID(leadID))
		return err
	})
	if err != nil {
		return "", "", "", err
	}
	return accountID, contactID, oppID, nil
}

func (s *Server) qualifyLead(leadID string) (accountID, contactID, oppID string, err error) {
	lead, ok := s.tables["lead"][leadID]
	if !ok {
		return "", "", "", fmt.Errorf("dataversesim: qualify lead %s: %w", leadID, errNotFound("lead", leadID))
	}
	if sc, _ := lead["statecode"].(OptionValue); sc != 0 {
		return "", "", "", fmt.Errorf("dataversesim: qualify lead %s: the lead is not open", leadID)
	}
	input := []jfield{{"LeadId", s.wcfRef(Ref{"lead", leadID}, false)}, {"CreateAccount", true}, {"CreateContact", true},
		{"CreateOpportunity", true}, {"OpportunityCurrencyId", nil}, {"OpportunityCustomerId", nil},
		{"SourceCampaignId", nil}, {"Status", s.wcfValue(OptionValue(3), false)}}
	parent := &parentCtx{message: "QualifyLead", entity: "lead", id: leadID, input: input}
	str := func(k string) any {
		if v, ok := lead[k].(string); ok {
			return v
		}
		return nil
	}
	owner := lead["ownerid"]
	leadRef := Ref{"lead", leadID}
	accName := str("companyname")
	if accName == nil {
		accName = str("fullname")
	}
	accountID, err = s.create(entities["account"], map[string]any{"name": accName, "telephone1": str("telephone1"),
		"websiteurl": str("websiteurl"), "originatingleadid": leadRef, "ownerid": owner}, s.opts.UserID, parent)
	if err != nil {
		return "", "", "", fmt.Errorf("dataversesim: qualify lead %s: %w", leadID, err)
	}
	contactID, err = s.create(entities["contact"], map[string]any{"firstname": str("firstname"), "lastname": str("lastname"),
		"emailaddress1": str("emailaddress1"), "jobtitle": str("jobtitle"), "telephone1": str("telephone1"),
		"parentcustomerid": Ref{"account", accountID}, "originatingleadid": leadRef, "ownerid": owner}, s.opts.UserID, parent)
	if err != nil {
		return "", "", "", fmt.Errorf("dataversesim: qualify lead %s: %w", leadID, err)
	}
	name := str("subject")
	if name == nil {
		name = fmt.Sprintf("Opportunity for %v", accName)
	}
	oppID, err = s.create(entities["opportunity"], map[string]any{"name": name, "customerid": Ref{"account", accountID},
		"parentaccountid": Ref{"account", accountID}, "parentcontactid": Ref{"contact", contactID},
		"originatingleadid": leadRef, "ownerid": owner}, s.opts.UserID, parent)
	if err != nil {
		return "", "", "", fmt.Errorf("dataversesim: qualify lead %s: %w", leadID, err)
	}
	pre := lead
	if err := s.update(entities["lead"], leadID, map[string]any{"statecode": OptionValue(1), "statuscode": OptionValue(3),
		"parentaccountid": Ref{"account", accountID}, "parentcontactid": Ref{"contact", contactID},
		"qualifyingopportunityid": Ref{"opportunity", oppID}}, s.opts.UserID, parent); err != nil {
		return "", "", "", fmt.Errorf("dataversesim: qualify lead %s: %w", leadID, err)
	}
	created := []any{s.wcfRef(Ref{"account", accountID}, false), s.wcfRef(Ref{"contact", contactID}, false), s.wcfRef(Ref{"opportunity", oppID}, false)}
	s.fire(&change{m: entities["lead"], id: leadID, message: "QualifyLead", pre: pre, post: s.tables["lead"][leadID],
		user: s.opts.UserID, input: input, output: []jfield{{"CreatedEntities", created}}})
	return accountID, contactID, oppID, nil
}

// Connect adds a contact to an opportunity's stakeholders with the named
// role (created as a Stakeholder-category role if missing). It returns the
// id of the master connection row; the reciprocal row is stored too.
func (s *Server) Connect(oppID, contactID, roleName string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	roleID := ""
	for id, r := range s.tables["connectionrole"] {
		if n, _ := r["name"].(string); n == roleName {
			roleID = id
		}
	}
	if roleID == "" {
		var err error
		roleID, err = s.create(entities["connectionrole"], map[string]any{"name": roleName, "category": OptionValue(1000)}, s.opts.UserID, nil)
		if err != nil {
			return "", fmt.Errorf("dataversesim: connect: %w", err)
		}
	}
	attrs := map[string]any{"record1id": Ref{"opportunity", normID(oppID)}, "record2id": Ref{"contact", normID(contactID)},
		"record2roleid": Ref{"connectionrole", roleID}}
	if err := s.checkRefs(entities["connection"], attrs); err != nil {
		return "", fmt.Errorf("dataversesim: connect opportunity %s to contact %s: %w", oppID, contactID, err)
	}
	var id string
	err := s.write(func() (err error) { id, err = s.createConnection(attrs, s.opts.UserID, nil); return err })
	if err != nil {
		return "", fmt.Errorf("dataversesim: connect opportunity %s to contact %s: %w", oppID, contactID, err)
	}
	return id, nil
}

// Get returns a copy of a row with typed values (Ref, OptionValue, Money,
// time.Time...), or false.
func (s *Server) Get(entity, id string) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	row, ok := s.tables[entity][normID(id)]
	if !ok {
		return nil, false
	}
	return copyRow(row), true
}

// Count returns the number of rows of an entity.
func (s *Server) Count(entity string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tables[entity])
}

// IDs returns the ids of an entity's rows, sorted.
func (s *Server) IDs(entity string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.tables[entity]))
	for id := range s.tables[entity] {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// ListenAndServe runs a simulator on addr until ctx ends
// (`msisync sim dataverse --addr …`).
func ListenAndServe(ctx context.Context, addr string, o Options, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	if o.Logger == nil {
		o.Logger = log
	}
	switch o.Delivery {
	case "", DeliveryInOrder, DeliveryShuffled, DeliveryDuplicated:
	default:
		return fmt.Errorf("dataversesim: delivery %q is not %s, %s or %s", o.Delivery, DeliveryInOrder, DeliveryShuffled, DeliveryDuplicated)
	}
	s := New(o)
	if o.Seed != (SeedOptions{}) {
		res, err := s.Seed(o.Seed)
		if err != nil {
			return err
		}
		n := 0
		for _, ids := range res.IDs {
			n += len(ids)
		}
		log.Info("dataverse simulator seeded", "rows", n)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("dataversesim: listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	log.Info("dataverse simulator listening", "url", "http://"+ln.Addr().String()+apiPrefix,
		"org", s.opts.OrgName, "appUserId", s.opts.AppUserID, "tokenRequired", o.Token != "")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = s.WaitIdle(sctx)
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("dataversesim: serve %s: %w", addr, err)
	}
}
